"""Text as people write it: label-keeping perturbations (`perturb`) and the behaviour suite built on them
(`suite`, with its sentences in `templates.tsv`)."""
