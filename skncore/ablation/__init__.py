"""Does a neuron matter: interventions, random controls, curves, their records and views."""
