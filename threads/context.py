"""How much of a branch fits the model (#18), pure: the path from the root to the message answered, the
oldest dropped first until it fits the model's context size less a margin for the reply; the system
prompt and the newest message (the question answered) are always kept.

Tokens are counted with billing's estimate (billing.rules), the one the budgets and the charges of
calls without a provider report use, so what is trimmed here and what is charged agree.
"""

from __future__ import annotations

from collections.abc import Sequence

from billing.rules import estimate_prompt_tokens

Turn = tuple[str, str]


def context_budget(*, context_tokens: int | None, reply_tokens: int) -> int | None:
    """The tokens the prompt may take (system prompt included): the model's context size less the
    reply's margin; None when the model's size is unknown (no bound but CONTEXT_MESSAGES)."""
    if not context_tokens:
        return None
    return max(0, context_tokens - reply_tokens)


def fit_context(history: Sequence[Turn], *, system_prompt: str, budget: int | None) -> list[Turn]:
    """The newest messages of `history` (oldest first) that fit `budget` with the system prompt; the
    last message always stays, even alone over the budget (the provider then says what it thinks)."""
    if budget is None or not history:
        return list(history)
    used = estimate_prompt_tokens([("system", system_prompt)]) if system_prompt else 0
    used += estimate_prompt_tokens(history[-1:])
    start = len(history) - 1
    while start > 0:
        cost = estimate_prompt_tokens(history[start - 1 : start])
        if used + cost > budget:
            break
        used += cost
        start -= 1
    # Cut in the middle of the branch: start at a question (Anthropic refuses a leading reply).
    while 0 < start < len(history) - 1 and history[start][0] == "assistant":
        start += 1
    return list(history[start:])
