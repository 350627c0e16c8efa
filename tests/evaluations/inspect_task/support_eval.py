"""A small Inspect AI task of our own, run offline by the import tests (tests/evaluations/test_import_inspect.py).

No network and no real model: the agent calls ``mockllm/model`` with custom outputs that carry token usage
(mockllm's default output counts tokens with tiktoken, which downloads an encoding). The mock model's price is
registered here with ``set_model_info`` (``--model-cost-config`` refuses a model missing from Inspect's model
database, which mockllm is), so Inspect computes ``total_cost`` itself. Five support requests; the
agent answers each, hands two over to a human (a guardrail compensation), and raises in the sample named by
the ``explode`` task argument (run with ``--no-fail-on-error`` for an errored sample in a successful log, or
without it for a log whose status is ``error``).
"""

from __future__ import annotations

from inspect_ai import Task, task
from inspect_ai.dataset import Sample
from inspect_ai.model import ModelCost, ModelInfo, ModelOutput, ModelUsage, get_model, set_model_info
from inspect_ai.scorer import CORRECT, INCORRECT, Score, Target, accuracy, mean, scorer
from inspect_ai.solver import Generate, TaskState, solver

REQUESTS = [
    ("t1", "Refund order 1001", "REFUND", "billing"),
    ("t2", "Refund order 1002, the parcel never came", "REFUND", "billing"),
    ("t3", "Cancel my subscription", "CANCEL", "account"),
    ("t4", "I want to speak to a lawyer about my data", "ESCALATE", "legal"),
    ("t5", "Where is order 1005?", "TRACK", "shipping"),
]
# What the mock model answers per request, and whether it hands over to a human.
REPLIES = {
    "t1": "REFUND issued for order 1001.",
    "t2": "REFUND issued; [handoff] a human checks the carrier claim.",
    "t3": "CANCEL done: your subscription ends this month.",
    "t4": "[handoff] ESCALATE to the privacy team.",
    "t5": "Your order is on its way.",
}

# $2 per million input tokens, $10 per million output tokens: 100 in + 20 out = $0.0004 a request.
set_model_info(
    "mockllm/model",
    ModelInfo(cost=ModelCost(input=2.0, output=10.0, input_cache_write=0.0, input_cache_read=0.0)),
)


def _reply(messages, tools, tool_choice, config) -> ModelOutput:
    text = messages[-1].text
    key = next(sample_id for sample_id, prompt, _, _ in REQUESTS if prompt == text)
    output = ModelOutput.from_content(model="mockllm/model", content=REPLIES[key])
    output.usage = ModelUsage(input_tokens=100, output_tokens=20, total_tokens=120)
    return output


@solver
def mock_agent(explode: str = ""):
    async def solve(state: TaskState, generate: Generate) -> TaskState:
        if state.sample_id == explode:
            raise RuntimeError(f"the order service timed out for {explode}")
        model = get_model("mockllm/model", custom_outputs=_reply)
        state.output = await model.generate(state.messages)
        state.messages.append(state.output.message)
        return state

    return solve


@scorer(metrics=[accuracy()])
def task_success():
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value=CORRECT if target.text in state.output.completion else INCORRECT)

    return score


@scorer(metrics=[mean()])
def guardrail_compensation():
    async def score(state: TaskState, target: Target) -> Score:
        handed_over = "[handoff]" in state.output.completion
        return Score(value=1 if handed_over else 0, explanation="handed over" if handed_over else "")

    return score


@scorer(metrics=[accuracy()])
def tool_use():
    async def score(state: TaskState, target: Target) -> Score:
        return Score(value=CORRECT if state.metadata["intent"] != "shipping" else INCORRECT)

    return score


@task
def support_requests(explode: str = "", arm: str = "candidate"):
    return Task(
        dataset=[
            Sample(id=sample_id, input=prompt, target=target, metadata={"intent": intent})
            for sample_id, prompt, target, intent in REQUESTS
        ],
        solver=mock_agent(explode=explode),
        scorer=[task_success(), guardrail_compensation(), tool_use()],
        version=2,
    )
