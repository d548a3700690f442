"""`python -m benchmarks.ilrec_sweep ...` = `python -m benchmarks.accuracy.sweep ...` (the validation screening), same
flags: the name under which the screening was first run, kept so that existing commands and jobs keep working."""

from benchmarks.accuracy.sweep import main

if __name__ == "__main__":
    main()
