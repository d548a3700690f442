"""What the report shows beside each stage's CPU time: its own figures (second table) and its plot legend."""

DETAILS = {  # stage -> [(label, path in its record, format)]
    "load + leave-one-out split + prompts": [
        ("interactions", ("interactions",), "{:,}"), ("train examples", ("train_examples",), "{:,}"),
        ("CSV file", ("csv_mb",), "{:.0f} MB"), ("datasets (Arrow)", ("arrow_mb",), "{:.0f} MB"),
        ("Python heap blocks kept per interaction", ("python_blocks_per_interaction",), "{:.2f}")],
    "ilrec-index (embeddings + residual k-means)": [
        ("text: TF-IDF + SVD", ("text", "cpu_s"), "{:.2f} s"), ("cf: ALS item factors", ("cf", "cpu_s"), "{:.2f} s"),
        ("residual k-means, 3 x 256", ("kmeans", "cpu_s"), "{:.1f} s"),
        ("residual k-means, added peak", ("kmeans", "peak_mb"), "+{:.0f} MB"),
        ("index.json text", ("index_json", "cpu_s"), "{:.2f} s"),
        ("items sharing codes before the collision level", ("items_in_collisions",), "{:,}")],
    "SASRec fit and scores": [
        ("sequences rebuilt from the train split", ("rebuild", "cpu_s"), "{:.2f} s"),
        ("batches per epoch (measured)", ("fit", "batches_per_epoch"), "{:,}"),
        ("batches measured", ("fit", "batches_measured"), "{:,}"),
        ("per batch, loss ce", ("fit", "cpu_per_batch_s"), "{:.2f} s"),
        ("per epoch, loss bce", ("bce", "cpu_per_epoch_s"), "{:.1f} s"),
        ("score 64 users x every item", ("score", "cpu_s"), "{:.3f} s"),
        ("score, added peak", ("score", "peak_mb"), "+{:.0f} MB"),
        ("score, per user x item", ("score", "cpu_per_user_item_ns"), "{:.1f} ns"),
        ("scoring every user once (a validation pass)", ("score", "validation_pass_cpu_s"), "{:.0f} s")],
    "catalogue bind + trie": [("trie nodes", ("trie_nodes",), "{:,}")],
    "catalog.json load": [("file", ("size_mb",), "{:.1f} MB"), ("write", ("write_cpu_s",), "{:.2f} s")],
    "MF fit (ALS)": [("per epoch", ("cpu_per_epoch_s",), "{:.2f} s"), ("interactions", ("interactions",), "{:,}")],
    "MF score_items (64 users)": [("per user x item", ("cpu_per_user_item_ns",), "{:.2f} ns")],
    "beam search (20 beams)": [("users / CPU s", ("users_per_cpu_s",), "{:.0f}")],
    "Recommender.recommend": [("batch 1 p50", ("batch1", "p50_s"), "{:.3f} s"),
                              ("batch 1 p99", ("batch1", "p99_s"), "{:.3f} s"),
                              ("batch 64 p50", ("batch64", "p50_s"), "{:.2f} s"),
                              ("batch 64 p99", ("batch64", "p99_s"), "{:.2f} s")],
    "training step (ILRec vs SFT)": [("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"),
                                      "{:.2f} s"),
                                     ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x"),
                                     ("TRL SFTTrainer step", ("sft", "step_cpu_s"), "{:.2f} s"),
                                     ("ILRec / SFTTrainer", ("ratio_to_sft",), "{:.2f}x")],
    "MF reward, top-1000 candidates (64 users)": [
        ("search", ("method",), "{}"), ("index build", ("index_build_cpu_s",), "{:.2f} s"),
        ("of which the search", ("search_cpu_s",), "{:.3f} s"),
        ("recall of the exact top-M", ("recall_of_exact_top",), "{:.3f}"),
        ("rewarded tokens whose reward equals the dense one", ("share_of_rewards_equal_to_dense",), "{:.3f}"),
        ("exact top-M, same batch", ("exact_cpu_s",), "{:.3f} s"),
        ("every item scored (dense), same batch", ("dense_cpu_s",), "{:.3f} s")],
    "training step, top-1000 candidates (ILRec vs SFT)": [
        ("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"), "{:.2f} s"),
        ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x")],
    "training step, SmolLM2-135M shape": [
        ("batch", ("batch",), "{}"), ("parameters", ("parameters",), "{:,}"),
        ("SFT loss step (ILRecTrainer, weights 0)", ("sft_loss", "step_cpu_s"), "{:.1f} s"),
        ("ILRec / SFT loss", ("ratio_to_sft_loss",), "{:.2f}x")],
}


LEGEND = {"beam search (20 beams)": "beam search, 20 beams, 64 users",
          "Recommender.recommend": "Recommender.recommend, batch 1 (p50)",
          "training step (ILRec vs SFT)": "ILRec training step, batch 64",
          "training step, top-1000 candidates (ILRec vs SFT)": "ILRec training step, top-1000 MF candidates",
          "SASRec fit and scores": "SASRec fit, one epoch (ce loss)",
          "training step, SmolLM2-135M shape": "ILRec training step, SmolLM2-135M shape, batch 8"}
