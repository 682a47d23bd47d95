"""Train a redshift-conditioned galaxy DDPM.

    accelerate launch train_scripts/train.py --preset quickstart
    accelerate launch train_scripts/train.py --preset paper --dataset_dir data/galaxiesml
    accelerate launch --multi_gpu --num_processes 4 train_scripts/train.py --config configs/paper.yaml

Every field of galaxy_pipeline.training.config.TrainingConfig is a flag (`--help` lists them).
"""

import sys

from galaxy_pipeline.training.config import parse_training_config
from galaxy_pipeline.training.trainer import NonFiniteLossError, train

USER_ERRORS = (ValueError, FileNotFoundError, FileExistsError, NotADirectoryError)

if __name__ == "__main__":
    try:
        pipeline_dir = train(parse_training_config())
    except USER_ERRORS as error:
        sys.exit(f"train.py: error: {error}")
    except NonFiniteLossError as error:
        sys.exit(f"train.py: stopped: {error}")
    print(f"Pipeline saved to {pipeline_dir}")
