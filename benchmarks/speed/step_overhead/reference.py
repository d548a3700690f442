"""The authors' approach, for cost: an `SFTTrainer` whose `compute_loss` asks the model for every hidden state (full
`[B, T, V]` logits), projects every position of the chosen layers through the final norm and the head, and loops
over the target tokens in Python, one token at a time through the library's `ilrec_losses` (so the maths is the
library's; only the way it is driven is the authors')."""

from .data import ILREC_LAYERS


def make_reference_trainer_class():
    import torch
    from trl import SFTTrainer

    from ilrec_trl import ILRecLossParams, ilrec_losses
    from ilrec_trl.rewards import RewardContext
    from ilrec_trl.trainer import CONTEXT_KEY, ContextCollator

    class ReferenceStyleTrainer(SFTTrainer):
        """All hidden states, every position of the chosen layers through the head, and a Python loop over the target
        tokens; the same loss as ILRecTrainer (`--check-reference`)."""

        def __init__(self, *args, catalog=None, reward_fn=None, layers=ILREC_LAYERS, loss_params=None, **kwargs):
            super().__init__(*args, **kwargs)
            if not all(-len(self.model.model.layers) <= i <= -2 for i in layers):
                raise ValueError("the reference variant takes layer indices in [-L, -2]")
            self.catalog, self.reward_fn, self.layers = catalog, reward_fn, list(layers)
            self.params = loss_params if loss_params is not None else ILRecLossParams()
            self.data_collator = ContextCollator(self.data_collator, ["user_id"])

        def _set_signature_columns_if_needed(self):
            super()._set_signature_columns_if_needed()
            if self._signature_columns is not None and "user_id" not in self._signature_columns:
                self._signature_columns = list(self._signature_columns) + ["user_id"]

        def token_reward(self, user, node_t, target, vocab):
            if self.reward_fn is None:
                return None
            ctx = RewardContext(context={"user_id": [user]}, rows=torch.zeros(1, dtype=torch.long),
                                targets=target, prefix_nodes=node_t, catalog=self.catalog, vocab_size=vocab)
            return self.reward_fn(ctx)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            context = inputs.pop(CONTEXT_KEY, {})
            labels = inputs["labels"]
            outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            output_hidden_states=True, use_cache=False)
            logits = outputs.logits  # [B, T, V], every position
            norm, head = model.model.norm, model.get_output_embeddings()
            # hidden_states[p + 1] leaves decoder layer p (hidden_states[0] = embeddings), so decoder layer -k (k >= 2)
            # is hidden_states[-k]; only the last entry (-1) is already normed.
            layer_logits = [head(norm(outputs.hidden_states[index])) for index in self.layers]  # [B, T, V] each
            vocab = logits.shape[-1]
            trie = self.catalog.trie
            users = context.get("user_id", [0] * labels.shape[0])
            terms = []
            for b in range(labels.shape[0]):
                node = 0  # trie root: the ground-truth prefix so far
                for t in range(labels.shape[1] - 1):
                    y = int(labels[b, t + 1])
                    if y == -100:
                        continue
                    node_t, target = torch.tensor([node]), torch.tensor([y])
                    lays = torch.stack([ll[b, t] for ll in layer_logits])  # [K, V]
                    out = ilrec_losses(logits[b, t][None], lays[:, None], target, self.params,
                                       scope_mask=trie.continuation_mask(node_t, vocab),
                                       rewards=self.token_reward(int(users[b]), node_t, target, vocab))
                    terms.append(out.per_token_loss[0])
                    if node >= 0:
                        node = int(trie.child(node_t, target)[0])
                        if node >= 0 and int(trie.item_at(torch.tensor([node]))[0]) >= 0:
                            node = -1  # identifier complete
            return torch.stack(terms).mean()

    return ReferenceStyleTrainer

