"""The local Pipe Mode runner: what SageMaker does around a training script, on one machine.

`pipemode train` and `Estimator.fit` lay out a job folder like `/opt/ml`, set the SM_* variables,
feed each Pipe channel's FIFOs epoch after epoch from local files or S3, run the script with the
current Python and pack its model, as a SageMaker training job would.
"""

from pipemode.errors import JobConfigError
from pipemode.runner.channels import Channel
from pipemode.runner.estimator import Estimator, ShuffleConfig, TrainingFailedError, TrainingInput
from pipemode.runner.job import JobResult, TrainingJob

__all__ = [
    "Channel",
    "Estimator",
    "JobConfigError",
    "JobResult",
    "ShuffleConfig",
    "TrainingFailedError",
    "TrainingInput",
    "TrainingJob",
]
