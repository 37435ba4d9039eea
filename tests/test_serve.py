"""``reptune serve`` over HTTP on a free loopback port: per-request steering, isolation, errors."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
import torch
from conftest import make_model, make_tokenizer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reptune import cli
from reptune.extract import measure_residual_norms
from reptune.models import load_model
from reptune.pairs import format_chat
from reptune.serve import BackgroundServer, ChatServer
from reptune.steering import SteeredModel
from reptune.tokenization import encode_batch
from reptune.vectors import SteeringVectors

PROMPT = "the quick brown fox"
N_TOKENS = 8


def _vectors(model, tok) -> SteeringVectors:
    g = torch.Generator().manual_seed(0)
    vecs = SteeringVectors(
        {1: torch.randn(32, generator=g), 2: torch.randn(32, generator=g)},
        SteeringVectors.describe_model(model),
    )
    return vecs.with_residual_norms(measure_residual_norms(model, tok, [PROMPT, "I love"], [1, 2]))


def reference(model, tok, vecs, prompt=PROMPT, steering=None, n=N_TOKENS) -> list[int]:
    """Greedy token ids of a direct (Steered)Model.generate on the chat-formatted prompt."""
    batch = encode_batch(tok, [format_chat(tok, prompt)])
    runner = SteeredModel(model, vecs, **steering) if steering else model
    out = runner.generate(**batch, max_new_tokens=n, do_sample=False)
    return out[0, batch["input_ids"].shape[1] :].tolist()


def chat(url, prompt=PROMPT, steering=None, n=N_TOKENS, **body):
    body = {"messages": [{"role": "user", "content": prompt}], "max_tokens": n, **body}
    if steering is not None:
        body["reptune"] = steering
    return requests.post(f"{url}/v1/chat/completions", json=body, timeout=30)


@pytest.fixture(scope="module")
def served():
    model, tok = make_model(), make_tokenizer()
    vecs = _vectors(model, tok)
    server = ChatServer(model, tok, vecs, model_name="tiny", max_tokens_limit=64)
    with BackgroundServer(server.app()) as running:
        yield SimpleNamespace(url=running.url, model=model, tok=tok, vecs=vecs)


def test_models_route_lists_the_model_and_its_layers(served):
    data = requests.get(f"{served.url}/v1/models", timeout=10).json()["data"]
    assert [m["id"] for m in data] == ["tiny"]
    assert data[0]["reptune"]["steering_layers"] == [1, 2]
    assert data[0]["reptune"]["context_length"] == 128


def test_response_has_the_openai_shape(served):
    out = chat(served.url).json()
    assert out["object"] == "chat.completion" and out["model"] == "tiny"
    choice = out["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    ids = out["reptune"]["completion_token_ids"]
    assert out["usage"]["completion_tokens"] == len(ids)
    assert out["usage"]["total_tokens"] == out["usage"]["prompt_tokens"] + len(ids)
    assert choice["message"]["content"] == served.tok.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize(
    "steering",
    [
        None,
        {"layers": [1], "coefficient": 2.0},
        {"layers": [1, 2], "coefficient": -1.5, "positions": "generated"},
        {"layers": 2, "coefficient": 6.0, "coefficient_unit": "raw"},
        {"layers": [2], "mode": "ablate"},
    ],
)
def test_per_request_steering_equals_steered_model(served, steering):
    expected = reference(served.model, served.tok, served.vecs, steering=steering)
    out = chat(served.url, steering=steering).json()
    assert out["reptune"]["completion_token_ids"] == expected
    text = served.tok.decode(expected, skip_special_tokens=True)
    assert out["choices"][0]["message"]["content"] == text


def test_coefficient_changes_the_output(served):
    base = chat(served.url).json()["reptune"]["completion_token_ids"]
    steered = chat(served.url, steering={"layers": [1], "coefficient": 2.0}).json()
    assert steered["reptune"]["completion_token_ids"] != base
    assert steered["reptune"]["steering"]["coefficient"] == 2.0
    zero = chat(served.url, steering={"layers": [1], "coefficient": 0.0}).json()
    assert zero["reptune"]["completion_token_ids"] == base


def test_concurrent_requests_do_not_leak(served):
    coefficients = [-2.0, -1.0, 0.0, 0.5, 1.0, 2.0, None, 3.0]
    specs = [None if c is None else {"layers": [1, 2], "coefficient": c} for c in coefficients]
    prompts = [f"{PROMPT} {i}" for i in range(len(specs))]
    expected = [
        reference(served.model, served.tok, served.vecs, p, s) for p, s in zip(prompts, specs)
    ]
    assert len({tuple(e) for e in expected}) > 4  # the coefficients give different outputs
    start = threading.Barrier(len(specs))

    def send(i):
        start.wait()
        return chat(served.url, prompts[i], specs[i]).json()["reptune"]["completion_token_ids"]

    with ThreadPoolExecutor(len(specs)) as pool:
        got = list(pool.map(send, range(len(specs))))
    assert got == expected


def test_sampling_with_a_seed_is_reproducible(served):
    body = {"temperature": 1.0, "seed": 7}
    first = chat(served.url, **body).json()["reptune"]["completion_token_ids"]
    assert chat(served.url, **body).json()["reptune"]["completion_token_ids"] == first


def test_stop_string_ends_the_text(served):
    full = chat(served.url).json()["choices"][0]["message"]["content"]
    stop = full[2:4]
    out = chat(served.url, stop=[stop]).json()["choices"][0]
    assert out["message"]["content"] == full[: full.find(stop)]
    assert out["finish_reason"] == "stop"


def _good(url, tok, model, vecs):
    out = chat(url, steering={"layers": [1], "coefficient": 1.0})
    assert out.status_code == 200
    assert out.json()["reptune"]["completion_token_ids"] == reference(
        model, tok, vecs, steering={"layers": [1], "coefficient": 1.0}
    )


USER = [{"role": "user", "content": "hi"}]
BAD_REQUESTS = [
    ({"messages": USER, "reptune": {"layers": [3], "coefficient": 1}}, 400, "unknown layer(s) [3]"),
    ('{"messages": [], "reptune": {"coefficient": NaN}}', 400, "messages must be a non-empty"),
    (
        '{"messages": [{"role": "user", "content": "hi"}], "reptune": {"coefficient": NaN}}',
        400,
        "reptune.coefficient must be a finite number, got nan",
    ),
    (
        '{"messages": [{"role": "user", "content": "hi"}], "reptune": {"coefficient": 1e999}}',
        400,
        "reptune.coefficient must be a finite number, got inf",
    ),
    ({"messages": USER, "reptune": {"coefficient": "0.1"}}, 400, "must be a finite number"),
    ({"messages": USER, "reptune": {"coefficient": True}}, 400, "must be a finite number"),
    ({"messages": USER, "reptune": {"layers": [1]}}, 400, "coefficient is required"),
    ({"messages": USER, "reptune": {"coeficient": 1}}, 400, "unknown reptune option(s)"),
    ({"messages": USER, "reptune": {"coefficient": 1, "mode": "x"}}, 400, "reptune.mode"),
    ({"messages": USER, "reptune": {"coefficient": 1, "positions": "x"}}, 400, "positions"),
    ({"messages": [{"role": "user", "content": "hi " * 200}]}, 400, "model's context of 128"),
    ({"messages": USER, "max_tokens": 100}, 400, "max_tokens must be between 1 and 64"),
    ({"messages": USER, "max_tokens": 0}, 400, "max_tokens must be between"),
    ({"messages": USER, "temperature": -1}, 400, "temperature must be between"),
    ('{"messages": [', 400, "not valid JSON"),
    ("[1, 2]", 400, "must be a JSON object"),
    ({"max_tokens": 4}, 400, "messages must be a non-empty list"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, 400, "role must be one of"),
    ({"messages": [{"role": "user"}]}, 400, "content must be a string"),
    ({"messages": USER, "n": 2}, 400, "only n=1"),
    ({"messages": USER, "stream": True}, 400, "streaming is not supported"),
    ({"messages": USER, "model": "gpt-4"}, 404, "serves 'tiny'"),
    # Values that break naive checks: huge integers, deep nesting, null where a value is needed.
    ({"messages": USER, "reptune": {"coefficient": 10**400}}, 400, "reptune.coefficient must be"),
    ({"messages": USER, "temperature": -(10**400)}, 400, "temperature must be between"),
    ({"messages": USER, "max_tokens": 10**400}, 400, "max_tokens must be between"),
    ({"messages": USER, "reptune": {"layers": [10**400], "coefficient": 1}}, 400, "reptune.layers"),
    ('{"messages": ' + "[" * 100_000 + "]" * 100_000 + "}", 400, "nested too deeply"),
    ({"messages": USER, "reptune": {"coefficient": None}}, 400, "coefficient is required"),
    ({"messages": USER, "reptune": {"coefficient": None, "mode": "ablate"}}, 400, "is null"),
    ({"messages": USER, "reptune": {"coefficient": 1e9}}, 400, "reptune.coefficient must be"),
    ({"messages": USER, "reptune": {"layers": None, "coefficient": 1}}, 400, "reptune.layers"),
    ({"messages": USER, "reptune": {"mode": None, "coefficient": 1}}, 400, "reptune.mode"),
    ({"messages": USER, "reptune": {"mode": [1], "coefficient": 1}}, 400, "reptune.mode"),
    ({"messages": USER, "model": ["tiny"]}, 400, "model must be a string"),
    ({"messages": USER, "stream": "yes"}, 400, "stream must be true or false"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, 400, "text"),
]


@pytest.mark.parametrize("body,status,message", BAD_REQUESTS)
def test_bad_request_gets_a_clear_4xx_and_the_server_keeps_serving(served, body, status, message):
    url = f"{served.url}/v1/chat/completions"
    data = body if isinstance(body, str) else json.dumps(body)
    answer = requests.post(url, data=data, timeout=10)
    assert answer.status_code == status
    error = answer.json()["error"]
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    _good(served.url, served.tok, served.model, served.vecs)


def test_unknown_route_and_oversize_body_answer_json_errors(served):
    answer = requests.get(f"{served.url}/v1/completions", timeout=10)
    assert answer.status_code in (404, 405)
    assert "/v1/chat/completions" in answer.json()["error"]["message"]
    answer = requests.post(f"{served.url}/v1/chat/completions", data=b"x" * 2**21, timeout=30)
    assert answer.status_code == 413
    assert "body size" in answer.json()["error"]["message"]
    _good(served.url, served.tok, served.model, served.vecs)


def test_server_without_vectors_refuses_steering():
    model, tok = make_model(), make_tokenizer()
    with BackgroundServer(ChatServer(model, tok).app()) as running:
        answer = chat(running.url, steering={"layers": [1], "coefficient": 1.0})
        assert answer.status_code == 400
        assert "--vectors" in answer.json()["error"]["message"]
        assert chat(running.url).json()["reptune"]["completion_token_ids"] == reference(
            model, tok, None
        )


def test_server_needs_a_chat_template():
    with pytest.raises(ValueError, match="chat template"):
        ChatServer(make_model(), make_tokenizer(chat_template=False))


def test_cli_checks_files_before_loading(tmp_path, capsys):
    assert cli.main(["serve", "--model", "nowhere/at-all", "--vectors", str(tmp_path)]) == 2
    assert "lacks steering_vectors.safetensors" in capsys.readouterr().err
    assert cli.main(["serve", "--adapter", str(tmp_path)]) == 2
    assert cli.main(["serve", "--port", "70000"]) == 2


def test_cli_serves_on_a_free_port_and_stops_on_sigterm(tmp_path):
    model, tok = make_model(), make_tokenizer()
    model.save_pretrained(tmp_path / "model")
    tok.save_pretrained(tmp_path / "model")
    vecs = _vectors(model, tok)
    vecs.save(tmp_path / "vectors")
    cmd = [sys.executable, "-m", "reptune.cli", "serve", "--model", str(tmp_path / "model")]
    cmd += ["--vectors", str(tmp_path / "vectors"), "--port", "0", "--served_model_name", "tiny"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    try:
        lines = []
        timer = threading.Timer(120, proc.kill)  # never hang the suite on a server that won't start
        timer.start()
        for line in proc.stdout:
            lines.append(line)
            if "listening on" in line:
                break
        timer.cancel()
        assert "listening on" in lines[-1], "".join(lines)
        url = lines[-1].split("listening on ")[1].strip().removesuffix("/v1")
        loaded, loaded_tok = load_model(str(tmp_path / "model"))
        steering = {"layers": [2], "coefficient": 1.5}
        expected = reference(
            loaded, loaded_tok, SteeringVectors.load(tmp_path / "vectors"), steering=steering
        )
        out = chat(url, steering=steering)
        assert out.status_code == 200, out.text
        assert out.json()["reptune"]["completion_token_ids"] == expected
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
    assert rc == 0


def test_numbers_checks():
    from reptune.serve.checks import RequestError, check_number

    assert check_number({}, "t", 0.5, 0, 1) == 0.5
    assert check_number({"t": 1}, "t", 0.5, 0, 1) == 1.0
    for bad in (math.nan, math.inf, "1", True, [1]):
        with pytest.raises(RequestError):
            check_number({"t": bad}, "t", 0.5, 0, 1)


def test_event_loop_answers_while_a_generation_runs():
    model, tok = make_model(), make_tokenizer()
    server = ChatServer(model, tok, max_pending=1)
    started, release = threading.Event(), threading.Event()
    generate = server.generate

    def held(job):
        started.set()
        release.wait(30)
        return generate(job)

    server.generate = held
    with BackgroundServer(server.app()) as running, ThreadPoolExecutor(1) as pool:
        first = pool.submit(chat, running.url)
        assert started.wait(30)
        assert requests.get(f"{running.url}/health", timeout=5).json()["pending"] == 1
        busy = chat(running.url)
        assert busy.status_code == 503 and "retry later" in busy.json()["error"]["message"]
        release.set()
        assert first.result().status_code == 200
        assert chat(running.url).status_code == 200


# -- fuzzing: random JSON bodies never get a 5xx, and the server keeps serving ---------------------
JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**450), max_value=10**450),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
)
ANY_JSON = st.recursive(
    JSON_LEAVES,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
STEERING = st.fixed_dictionaries(
    {},
    optional={key: ANY_JSON | st.sampled_from([1, [1], "add", "ablate", "raw", "all", 0.5])
              for key in ("layers", "coefficient", "coefficient_unit", "mode", "positions")},
)  # fmt: skip
BODIES = st.one_of(
    ANY_JSON,
    st.fixed_dictionaries(
        {"messages": st.one_of(ANY_JSON, st.just(USER))},
        optional={
            key: ANY_JSON
            for key in ("model", "max_tokens", "temperature", "top_p", "seed", "stop", "n")
        }
        | {"reptune": st.one_of(ANY_JSON, STEERING), "stream": ANY_JSON},
    ),
    st.integers(min_value=1, max_value=20_000).map(lambda d: "[" * d + "]" * d),
)


def _json_text(body) -> str:
    return body if isinstance(body, str) else json.dumps(body)  # NaN and Infinity as JS writes them


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(body=BODIES)
def test_random_json_bodies_get_a_4xx_or_an_answer_never_a_5xx(served, body):
    url = f"{served.url}/v1/chat/completions"
    if isinstance(body, dict) and "max_tokens" not in body:
        body = {**body, "max_tokens": 2}  # keep the accepted ones quick
    answer = requests.post(url, data=_json_text(body), timeout=30)
    assert answer.status_code < 500, answer.text[:300]
    if answer.status_code != 200:
        error = answer.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"]
    assert requests.get(f"{served.url}/health", timeout=10).json()["status"] == "ok"
