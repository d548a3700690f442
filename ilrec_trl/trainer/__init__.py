from .ilrec_config import ILRecConfig
from .ilrec_trainer import ILRecTrainer
from .recommender_mixin import RecommenderTrainerMixin, RecSFTTrainer

__all__ = ["ILRecConfig", "ILRecTrainer", "RecSFTTrainer", "RecommenderTrainerMixin"]
