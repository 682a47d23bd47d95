"""Train the CNN redshift predictor on a converted GalaxiesML dataset.

    accelerate launch train_scripts/train_redshift_predictor.py --dataset DIR --output_dir OUT \
        [--max_steps 20000] [--batch_size 128] [--size small|tiny]

See ``galaxy_pipeline.evaluation.train_predictor`` for every argument (``--help``).
"""

from galaxy_pipeline.evaluation.train_predictor import main

if __name__ == "__main__":
    main()
