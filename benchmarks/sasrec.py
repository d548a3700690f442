"""SASRec moved into the package: `ilrec_trl.rewards.SASRecReward` (fit, early stopping, save/load, reward_fn).

This module only re-exports it under its former names, so that scripts which still `import sasrec` from benchmarks/
keep working; new code should import from `ilrec_trl.rewards.sasrec`.
"""

from ilrec_trl.rewards.sasrec import SASRec, training_sequences  # noqa: F401
from ilrec_trl.rewards.sasrec import SASRecReward as SASRecRecommender  # noqa: F401
