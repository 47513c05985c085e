"""``python -m distill.cli`` (what torchrun runs: ``torchrun --nproc_per_node=N -m distill.cli relabel ...``)."""
import sys

from distill.cli import main

sys.exit(main())
