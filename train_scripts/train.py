"""Train a redshift-conditioned galaxy DDPM.

    accelerate launch train_scripts/train.py --preset quickstart
    accelerate launch train_scripts/train.py --preset paper --dataset_dir data/galaxiesml
    accelerate launch --multi_gpu --num_processes 4 train_scripts/train.py --config configs/paper.yaml

Every field of galaxy_pipeline.training.config.TrainingConfig is a flag (`--help` lists them).
"""

import sys

from accelerate import PartialState

from galaxy_pipeline.hub import push_pipeline
from galaxy_pipeline.training.config import parse_training_config
from galaxy_pipeline.training.trainer import NonFiniteLossError, train

USER_ERRORS = (ValueError, OSError)  # OSError: missing or used paths, permissions, a full disk, the Hub offline


def main() -> int:
    """Train, export and (with --push_to_hub) upload; a problem the user can fix is one line on stderr, exit code 2."""
    try:
        config = parse_training_config()
        pipeline_dir = train(config)
        if config.push_to_hub and PartialState().is_main_process:
            url = push_pipeline(pipeline_dir, config.hub_model_id, private=config.hub_private)
            print(f"Pushed the pipeline to {url}")
    except USER_ERRORS as error:
        hint = (
            " (check that the path exists and is writable, and that its disk has space)" if _is_os_level(error) else ""
        )
        print(f"train.py: error: {error}{hint}", file=sys.stderr)
        return 2
    except NonFiniteLossError as error:
        print(f"train.py: stopped: {error}", file=sys.stderr)
        return 2
    print(f"Pipeline saved to {pipeline_dir}")
    return 0


def _is_os_level(error: Exception) -> bool:
    """An error raised by the operating system (it carries an errno), not one of ours with its own advice."""
    return isinstance(error, OSError) and error.errno is not None


if __name__ == "__main__":
    sys.exit(main())
