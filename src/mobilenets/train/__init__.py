"""Training, evaluation and prediction on real data (``mobilenets train/evaluate/predict``)."""

from .config import TrainConfig
from .run_folder import OutputExists
from .trainer import Trainer, TrainingDiverged, train

__all__ = ["OutputExists", "TrainConfig", "Trainer", "TrainingDiverged", "train"]
