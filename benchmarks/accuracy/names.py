"""The harness's method names, in one place (the flags, the runner and the report read them)."""

CLASSIC_METHODS = ("popular", "mf", "sasrec")
ABLATIONS = {"ilrec": {}, "ilrec_no_cpo": {"cpo_alpha": 0.0}, "ilrec_no_cpd": {"cpd_weight": 0.0},
             "ilrec_no_crr": {"crr_weight": 0.0}, "ilrec_tuned": {}, "ilrec_sasrec_reward": {},
             "ilrec_sasrec_reward_no_cpo": {"cpo_alpha": 0.0}, "ilrec_mf_top1000": {}}
LLM_METHODS = ("sft_more", "dpo", *ABLATIONS)
# the second protocol: ILRec over the whole run from a fresh model, trained and selected like `sft`
# (`ilrec_scratch_sasrec_reward`: the same with L_CRR's reward from SASRec, the paper's choice)
SCRATCH_METHODS = ("ilrec_scratch", "ilrec_scratch_sasrec_reward")
ALL_METHODS = (*CLASSIC_METHODS, "sft", *LLM_METHODS, *SCRATCH_METHODS)
# the collaborative model behind L_CRR: the MF reward (the product's default) unless named here
REWARD_SOURCE = {"ilrec_sasrec_reward": "sasrec", "ilrec_sasrec_reward_no_cpo": "sasrec",
                 "ilrec_scratch_sasrec_reward": "sasrec"}
# options of the reward's `as_reward_fn` (the MF reward's candidate set: each user's top-1000 items by MF, found by
# the faiss index, the others unrewarded; the option for catalogues of 10^5+ items, its accuracy effect measured here)
REWARD_OPTIONS = {"ilrec_mf_top1000": {"candidates": 1000, "candidate_search": "faiss"}}
