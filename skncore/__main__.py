"""`python -m skn ...`: the `skn` command, also as torchrun's module (`torchrun --nproc-per-node N -m skn probe ...`)."""

from skn.cli.main import main

if __name__ == "__main__":
    main()
