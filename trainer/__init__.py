"""Fine-tuning on archived discussions: the paper's M500 selection and its SFT recipe.

archive.py reads the archiver's files, m500.py keeps the trajectories worth learning from, samples.py
turns them into chat samples, dataset.py writes those as JSONL, sft.py fine-tunes a model on them.
"""
