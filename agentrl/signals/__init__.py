"""Signal providers: the model-computed inputs of the step-level credit methods (ARCHITECTURE.md §5).

They run on the policy model during training, beside the pure-numpy credit methods of
`agentrl.credit`, one file each:

- `agentrl.signals.spa`  (`SPAProvider`): a progress estimator on the policy's hidden states
  -> signals["progress"]; trained online.
- `agentrl.signals.oprl` (`OPRLProvider`): the implicit PRM, a second LoRA adapter "prm"
  -> signals["logratio"]; trained with the pairwise PRM loss.
- `agentrl.signals.igpo` (`IGPOProvider`): the policy's probability of the ground truth
  -> signals["answer_prob"] / episode signals["final_answer_prob"]; nothing to train.

All follow `SignalProvider` (`agentrl.signals.base`). The credit registry names each method's
provider; `agentrl.credit.build_credit` builds the method and its provider from a recipe.
Importing this package does not import torch (the provider modules do).
"""

from agentrl.signals.base import SignalProvider

__all__ = ["SignalProvider"]
