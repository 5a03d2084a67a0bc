"""What people look at: the terminal, the figures, the HTML report, the verdict in words."""
