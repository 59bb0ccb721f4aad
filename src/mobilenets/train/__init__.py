"""Training, evaluation and prediction on real data (``mobilenets train/evaluate/predict``)."""

from .trainer import OutputExists, TrainConfig, Trainer, TrainingDiverged, train

__all__ = ["OutputExists", "TrainConfig", "Trainer", "TrainingDiverged", "train"]
