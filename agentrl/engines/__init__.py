"""Rollout engines (ARCHITECTURE.md §7): token ids in, token ids and log-probs out.

`hf` (agentrl's own batched decoding loop over transformers, KV reuse across turns) and `vllm`
(vLLM, automatic prefix caching, the command trie as a logits processor). The policy
(`agentrl.policy.llm`) builds prompts and parses actions; an engine only generates.
"""
