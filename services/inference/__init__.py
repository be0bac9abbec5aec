"""The inference gateway: every model call in Conclave goes through it (gRPC `conclave.v1.Inference`).

It fronts a pool of OpenAI-compatible pods (llama.cpp, vLLM), an in-process vLLM engine, or a
scripted model for protocol tests; routes by session affinity with bounded load, admits a bounded
number of requests per pod, enforces token budgets (max_tokens, budget forcing, the per-problem
ledger) and streams tokens back.
"""
