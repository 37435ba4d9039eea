"""The AxBench-rubric LLM judge against a fake OpenAI-compatible server on 127.0.0.1."""

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from reptune.evaluation.open_ended.endpoint import ChatEndpoint, EndpointError
from reptune.evaluation.scorers import AxBenchJudge, judge_prompt, parse_rating


def _reply_for(message: str) -> tuple[int, str]:
    """The fake judge: rates by keywords in the text fragment, as a scripted model would."""
    fragment = message.split("[Text Fragment Start]\n", 1)[1].split("\n[Text Fragment End]")[0]
    if "refuse" in fragment:
        return 400, ""
    if "forbidden" in fragment:
        return 401, ""
    if "mumble" in fragment:
        return 200, "It is hard to say; maybe two?"
    if "sunny" in fragment:
        return 200, "The concept is clearly there. Rating: [[2]]"
    if "okay" in fragment:
        return 200, "Weakly present. Rating: [[1]] (earlier I thought [[2]]) Rating: [[1]]"
    if "three" in fragment:
        return 200, "Rating: [[3]]"
    return 200, "Absent. Rating: [[0]]"


class _Handler(BaseHTTPRequestHandler):
    seen: list = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        message = body["messages"][0]["content"]
        _Handler.seen.append(body)
        status, text = _reply_for(message)
        if status != 200:
            payload = {"error": {"message": "no"}}
        else:
            payload = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def endpoint():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _Handler.seen = []
    try:
        yield ChatEndpoint(
            f"http://127.0.0.1:{server.server_port}/v1", model="fake-judge", max_retries=0
        )
    finally:
        server.shutdown()
        server.server_close()


def test_parse_rating_takes_the_last_rating_in_range():
    assert parse_rating("Rating: [[2]]") == 2.0
    assert parse_rating("rating: [[ 1.5 ]]") == 1.5
    assert parse_rating("Rating: [[2]] no wait Rating: [[0]]") == 0.0
    assert parse_rating("Rating: [[3]]") is None
    assert parse_rating("two") is None
    assert parse_rating("") is None


def test_prompts_carry_the_rubric_and_the_right_context():
    concept = judge_prompt("concept", "Describe your day.", "Sunny!", concept="a positive tone")
    assert "a positive tone" in concept and "Describe your day." not in concept
    assert "0 if the concept is absent" in concept and "2 if it is clearly present" in concept
    instruction = judge_prompt("instruction", "Describe your day.", "Sunny!")
    assert "[Instruction Start]\nDescribe your day.\n[Instruction End]" in instruction
    fluency = judge_prompt("fluency", "Describe your day.", "Sunny!")
    assert "Describe your day." not in fluency and "repetitive" in fluency
    with pytest.raises(ValueError, match="unknown aspect"):
        judge_prompt("style", "q", "a")


def test_scores_count_unparseable_and_refused_verdicts(endpoint):
    judge = AxBenchJudge(endpoint, aspect="concept", concept="a warm, positive tone")
    answers = ["A sunny day!", "It was okay.", "Grey.", "mumble", "please refuse", "three"]
    scores = judge.score(["Describe your day."] * len(answers), answers)
    assert scores[:3] == [2.0, 1.0, 0.0]
    assert all(math.isnan(s) for s in scores[3:])
    assert (judge.unparseable, judge.refused) == (2, 1)
    assert len(judge.replies) == len(answers)
    assert judge.to_unit([2.0, 1.0, 0.0]) == [1.0, 0.5, 0.0]
    assert judge.axis == "behaviour" and "fake-judge" in judge.name
    sent = _Handler.seen[0]
    assert sent["model"] == "fake-judge" and sent["temperature"] == 0.0
    assert "a warm, positive tone" in sent["messages"][0]["content"]


def test_fatal_endpoint_errors_are_raised(endpoint):
    judge = AxBenchJudge(endpoint, aspect="fluency")
    with pytest.raises(EndpointError, match="401"):
        judge.score(["q"], ["forbidden"])


def test_bad_settings_fail_before_any_request(endpoint):
    with pytest.raises(ValueError, match="concept="):
        AxBenchJudge(endpoint, aspect="concept")
    with pytest.raises(ValueError, match="unknown aspect"):
        AxBenchJudge(endpoint, aspect="tone")
    assert AxBenchJudge(endpoint, aspect="instruction").axis == "relevance"
    assert _Handler.seen == []
