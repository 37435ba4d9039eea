"""The pairwise judge over HTTP: a scripted judge server, and ``reptune serve`` as the judge."""

from __future__ import annotations

import asyncio
import json
import re

import pytest
from aiohttp import web
from conftest import make_model, make_tokenizer

from reptune.evaluation.open_ended.endpoint import ChatEndpoint, EndpointError
from reptune.evaluation.open_ended.judge import judge_pairwise, judge_report, parse_verdict
from reptune.pairs import format_chat
from reptune.serve import BackgroundServer, ChatServer
from reptune.tokenization import encode_batch

_SHOWN = re.compile(r"\[Answer A\]\n(.*)\n\n\[Answer B\]\n(.*)\n\n", re.S)
SECRET = "sk-test-0123456789-secret"


class ScriptedJudge:
    """An OpenAI-style server whose verdicts follow a script keyed on the prompt text."""

    def __init__(self):
        self.requests: list[dict] = []
        self.fail_next: list[tuple[int, str]] = []

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"body": body, "auth": request.headers.get("Authorization")})
        if self.fail_next:
            status, message = self.fail_next.pop(0)
            if status == 0:
                await asyncio.sleep(2)
                status = 500
            return web.json_response({"error": {"message": message}}, status=status)
        text = body["messages"][-1]["content"]
        a, b = _SHOWN.search(text).groups()
        if "chatty" in text:
            reply = "I think A is better"
        elif "first" in text:
            reply = "A"
        elif "fail-once" in text:
            reply = "**B**." if a.startswith("x") else "Answer: B"
        elif "good" in a or "good" in b:
            reply = "A" if "good" in a else "B"
        else:
            reply = "tie"
        message = {"role": "assistant", "content": reply}
        return web.json_response({"choices": [{"index": 0, "message": message}]})


@pytest.fixture
def judge_server():
    script = ScriptedJudge()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", script.chat)
    with BackgroundServer(app) as running:
        script.url = running.url + "/v1"
        yield script


PROMPTS = ["p0", "p1", "p2", "p3 first", "p4 chatty", "p5 fail-once"]
X = ["x good", "x bad", "x meh", "x one", "x two", "x good"]
Y = ["y bad", "y good", "y meh", "y one", "y two", "y good"]


def test_parse_verdict_is_strict():
    assert [parse_verdict(t) for t in ("A", " b ", "**A**", "(B).", "'tie'", "TIE\n")] == [
        "A",
        "B",
        "A",
        "B",
        "tie",
        "tie",
    ]
    for reply in ("", "A or B", "Answer: A", "AB", "neither", "A is better", "B, because", None):
        assert parse_verdict(reply) is None


def test_round_trip_counts_orders_ties_failures_and_position_bias(judge_server, monkeypatch):
    monkeypatch.setenv("REPTUNE_TEST_JUDGE_KEY", SECRET)
    endpoint = ChatEndpoint(judge_server.url, "scripted", api_key_env="REPTUNE_TEST_JUDGE_KEY")
    result = judge_pairwise(PROMPTS, X, Y, endpoint, names=("x", "y"))
    # Both orders of every prompt reached the server, greedy, with the key from the env.
    assert len(judge_server.requests) == 12
    shown = [
        _SHOWN.search(r["body"]["messages"][-1]["content"]).groups() for r in judge_server.requests
    ]
    assert sorted(shown) == sorted([(x, y) for x, y in zip(X, Y)] + [(y, x) for x, y in zip(X, Y)])
    assert {r["body"]["temperature"] for r in judge_server.requests} == {0.0}
    assert {r["body"]["model"] for r in judge_server.requests} == {"scripted"}
    assert {r["auth"] for r in judge_server.requests} == {f"Bearer {SECRET}"}

    assert result.outcomes() == ["x", "y", "tie", "tie", None, None]
    s = result.summary()
    assert s["judged_prompts"] == 4
    assert (s["win_rate"]["x"].k, s["win_rate"]["y"].k, s["tie_rate"].k) == (1, 1, 2)
    assert (s["consistency"].k, s["consistency"].n) == (3, 4)  # p3 flips with the order
    assert (s["parse_failures"].k, s["parse_failures"].n) == (3, 12)
    # Decisive rounds: p0 and p1 (one first-shown win each), p3 (two), p5's parsed round (none).
    assert (s["position_bias"].k, s["position_bias"].n) == (4, 7)
    assert s["verdict_counts"] == {"A": 4, "B": 3, "tie": 2}
    assert s["request_errors"] == 0
    parallel = judge_pairwise(PROMPTS, X, Y, endpoint, names=("x", "y"), max_workers=4)
    assert [r.reply for r in parallel.rounds] == [r.reply for r in result.rounds]


def test_report_material_and_saved_file_hold_no_key(judge_server, monkeypatch, tmp_path):
    monkeypatch.setenv("REPTUNE_TEST_JUDGE_KEY", SECRET)
    endpoint = ChatEndpoint(judge_server.url, "scripted", api_key_env="REPTUNE_TEST_JUDGE_KEY")
    result = judge_pairwise(PROMPTS[:3], X[:3], Y[:3], endpoint, names=("base", "steered"))
    material = judge_report(result)
    assert set(material) == {"title", "text", "tables"}
    assert [t["name"] for t in material["tables"]] == [
        "judge_summary",
        "judge_verdicts",
        "judge_items",
    ]
    summary = {row["metric"]: row for row in material["tables"][0]["rows"]}
    assert summary["win_rate/steered"]["k"] == 1 and summary["tie_rate"]["k"] == 1
    assert "Position bias" in material["text"]
    saved = result.save(tmp_path / "judge.json").read_text()
    assert json.loads(saved)["summary"]["win_rate"]["steered"]["k"] == 1
    for text in (saved, json.dumps(material), repr(endpoint), repr(result)):
        assert SECRET not in text


def test_key_is_redacted_from_errors(judge_server, monkeypatch):
    monkeypatch.setenv("REPTUNE_TEST_JUDGE_KEY", SECRET)
    judge_server.fail_next = [(401, f"Incorrect API key provided: {SECRET}")]
    endpoint = ChatEndpoint(judge_server.url, "scripted", api_key_env="REPTUNE_TEST_JUDGE_KEY")
    with pytest.raises(EndpointError) as err:
        judge_pairwise(PROMPTS[:1], X[:1], Y[:1], endpoint)
    assert err.value.status == 401
    assert SECRET not in str(err.value) and "REPTUNE_TEST_JUDGE_KEY" in str(err.value)


def test_transient_errors_are_retried_and_content_errors_counted(judge_server):
    judge_server.fail_next = [(503, "busy"), (400, "too long for me")]
    endpoint = ChatEndpoint(judge_server.url, "scripted", max_retries=1)
    result = judge_pairwise(PROMPTS[:2], X[:2], Y[:2], endpoint)
    # The 503 is retried; the retry's 400 is one failed round, not a parse failure.
    assert len(judge_server.requests) == 5
    s = result.summary()
    assert s["request_errors"] == 1 and s["parse_failures"].k == 0
    assert "too long for me" in [r for r in result.rounds if r.error][0].error
    assert result.outcomes() == [None, "b"]


def test_timeouts_are_bounded(judge_server):
    judge_server.fail_next = [(0, "slow")]
    endpoint = ChatEndpoint(judge_server.url, "scripted", timeout=0.3, max_retries=0)
    with pytest.raises(EndpointError, match="could not reach"):
        endpoint.complete([{"role": "user", "content": "hi"}])


def test_bad_judge_settings_are_refused():
    with pytest.raises(ValueError, match="http"):
        ChatEndpoint("127.0.0.1:8000/v1", "m")
    endpoint = ChatEndpoint("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ValueError, match="one answer of each system"):
        judge_pairwise(["p"], ["a"], [], endpoint)
    with pytest.raises(ValueError, match="names"):
        judge_pairwise(["p"], ["a"], ["b"], endpoint, names=("s", "s"))
    with pytest.raises(ValueError, match="template"):
        judge_pairwise(["p"], ["a"], ["b"], endpoint, template="{prompt} {answer_a}")


def test_judge_through_reptune_serve():
    """The served tiny model as the judge: its replies are what the model generates for the
    judge prompt, and every reply that is not a verdict is counted as a parse failure."""
    model, tok = make_model(context=512), make_tokenizer()  # the judge prompt needs ~200 tokens
    with BackgroundServer(ChatServer(model, tok, model_name="tiny").app()) as running:
        endpoint = ChatEndpoint(running.url + "/v1", "tiny")
        result = judge_pairwise(
            ["p0", "p1"], ["one", "two"], ["uno", "dos"], endpoint, max_tokens=4
        )
    assert len(result.rounds) == 4
    for r in result.rounds:
        a, b = (
            (["one", "two"], ["uno", "dos"]) if r.first == "a" else (["uno", "dos"], ["one", "two"])
        )
        text = format_chat(tok, _prompt_of(result.prompts[r.item], a[r.item], b[r.item]))
        batch = encode_batch(tok, [text])
        out = model.generate(**batch, max_new_tokens=4, do_sample=False)
        assert r.reply == tok.decode(
            out[0, batch["input_ids"].shape[1] :], skip_special_tokens=True
        )
    failures = sum(parse_verdict(r.reply) is None for r in result.rounds)
    assert result.summary()["parse_failures"].k == failures
    assert result.summary()["request_errors"] == 0


def _prompt_of(prompt, answer_a, answer_b):
    from reptune.evaluation.open_ended.judge import DEFAULT_CRITERION, JUDGE_TEMPLATE

    return JUDGE_TEMPLATE.format(
        prompt=prompt, answer_a=answer_a, answer_b=answer_b, criterion=DEFAULT_CRITERION
    )
