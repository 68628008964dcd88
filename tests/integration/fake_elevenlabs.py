"""A local stand-in for the ElevenLabs REST API, for the tests of the health check and of
`gensendrep elevenlabs backfill`.

The real API (https://api.elevenlabs.io) cannot be reached from the machines the tests run on,
and a test must not depend on a real workspace anyway, so this small threaded http.server
answers the two endpoints gensendrep uses, in the shapes of the public elevenlabs-python SDK
(github.com/elevenlabs/elevenlabs-python, files under src/elevenlabs/):

- GET /v1/convai/conversations (conversational_ai/conversations/raw_client.py `list`): query
  cursor, agent_id, page_size (1..100, default 30), call_start_after_unix,
  call_start_before_unix; answer GetConversationsPageResponseModel
  (types/get_conversations_page_response_model.py): {"conversations": [...], "next_cursor",
  "has_more"}, each item a ConversationSummaryResponseModel
  (types/conversation_summary_response_model.py), newest first.
- GET /v1/convai/conversations/{conversation_id} (raw_client.py `get`): answer
  GetConversationResponseModel (types/get_conversation_response_model.py) with metadata
  (types/conversation_history_metadata_common_model.py), analysis
  (types/conversation_history_analysis_common_model.py), transcript turns
  (types/conversation_history_transcript_response_model.py) and
  conversation_initiation_client_data (types/conversation_initiation_client_data_request_output.py).
- The key travels in the xi-api-key header (core/client_wrapper.py); a missing or wrong key is
  401 {"detail": {"status": "invalid_api_key", "message": ...}}; throttling is 429 with
  Retry-After (core/http_client.py reads it).

Knobs (attributes, changeable while it runs): conversations (detail dicts, see
make_conversation), api_key (None: any key is accepted), throttle (the next N requests answer
429 with Retry-After: retry_after), close_after_details (after K detail answers, every further
detail request has its connection closed unanswered: an API that goes away mid-run), delay
(seconds to wait before answering anything), log (every request: method, path, query, status).
Run it by hand: python3 fake_elevenlabs.py --port 8700 --key xi-test --conversations 5
"""
import argparse
import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LIST_PATH = "/v1/convai/conversations"
MAX_PAGE_SIZE = 100
DEFAULT_PAGE_SIZE = 30


def make_conversation(conversation_id=None, agent_id="agent_01k9ag04z6g5cdabhxjbntyvj9",
                      start=1773151000, status="done", email="maya@example.com",
                      account="acct_4821907", turns=3, duration=None, extra=None):
    """A GetConversationResponseModel as the API returns it (fields the SDK declares, plus one
    it does not know yet: real answers grow new fields all the time)."""
    cid = conversation_id or "conv_" + uuid.uuid4().hex[:26]
    transcript = []
    for i in range(turns):
        role = "agent" if i % 2 == 0 else "user"
        transcript.append({
            "role": role,
            "agent_metadata": {"agent_id": agent_id} if role == "agent" else None,
            "message": None if i == 3 else f"turn {i} of {cid}",  # a silent turn: null
            "multivoice_message": None,
            "tool_calls": [],
            "tool_results": [],
            "feedback": None,
            "llm_override": None,
            "time_in_call_secs": i * 5,
            "conversation_turn_metrics": None,
            "rag_retrieval_info": None,
            "llm_usage": None,
            "interrupted": False,
            "original_message": None,
            "source_medium": "audio",
        })
    dynamic = {"system__agent_id": agent_id, "system__conversation_id": cid}
    if email is not None:
        dynamic["user_email"] = email
    if account is not None:
        dynamic["account_id"] = account
    detail = {
        "agent_id": agent_id,
        "agent_name": "Brightline Support",
        "status": status,
        "user_id": None,
        "branch_id": None,
        "version_id": None,
        "metadata": {
            "start_time_unix_secs": start,
            "accepted_time_unix_secs": start,
            "call_duration_secs": duration if duration is not None else turns * 5,
            "cost": 412,
            "deletion_settings": None,
            "feedback": {"overall_score": None, "likes": 0, "dislikes": 0},
            "authorization_method": "signed_url",
            "charging": None,
            "phone_call": None,
            "batch_call": None,
            "termination_reason": "end_call tool was called.",
            "error": None,
            "warnings": [],
            "main_language": "en",
            "rag_usage": None,
            "text_only": False,
            "timezone": None,
            "future_metadata_field": {"added": "later"},
        },
        "analysis": {
            "evaluation_criteria_results": {},
            "data_collection_results": {},
            "call_successful": "success",
            "transcript_summary": f"Summary of {cid}.",
            "call_summary_title": "Double charge",
        },
        "conversation_initiation_client_data": {
            "conversation_config_override": {"agent": None, "tts": None},
            "custom_llm_extra_body": {},
            "user_id": None,
            "source_info": {"source": "js_sdk", "version": "0.4.1"},
            "dynamic_variables": dynamic,
        },
        "environment": "production",
        "conversation_id": cid,
        "has_audio": True,
        "has_user_audio": True,
        "has_response_audio": True,
        "has_auxiliary_audio": False,
        "transcript": transcript,
        "tag_ids": [],
        "an_unknown_new_field": [1, 2, 3],
    }
    if extra:
        detail.update(extra)
    return detail


def summary_of(detail):
    """The ConversationSummaryResponseModel the list endpoint shows for a conversation."""
    meta = detail["metadata"]
    analysis = detail.get("analysis") or {}
    return {
        "agent_id": detail["agent_id"],
        "branch_id": None,
        "version_id": None,
        "agent_name": detail.get("agent_name"),
        "conversation_id": detail["conversation_id"],
        "start_time_unix_secs": meta["start_time_unix_secs"],
        "call_duration_secs": meta["call_duration_secs"],
        "message_count": len(detail.get("transcript") or []),
        "status": detail["status"],
        "termination_reason": meta.get("termination_reason"),
        "call_successful": analysis.get("call_successful", "unknown"),
        "call_success_score": None,
        "transcript_summary": analysis.get("transcript_summary"),
        "call_summary_title": analysis.get("call_summary_title"),
        "main_language": meta.get("main_language"),
        "conversation_initiation_source": "js_sdk",
        "tool_names": [],
        "direction": None,
        "rating": None,
    }


class FakeElevenLabs:
    def __init__(self, conversations=None, api_key="xi-test-key", host="127.0.0.1", port=0):
        self.conversations = list(conversations or [])
        self.api_key = api_key
        self.throttle = 0
        self.retry_after = 1
        self.close_after_details = None
        self.delay = 0.0
        self.log = []
        self.details_served = 0
        self._lock = threading.Lock()
        self._conns = set()  # open keep-alive connections, cut by stop()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep the test output quiet
                pass

            def setup(self):
                super().setup()
                with fake._lock:
                    fake._conns.add(self.connection)

            def finish(self):
                with fake._lock:
                    fake._conns.discard(self.connection)
                super().finish()

            def do_GET(self):
                fake._handle(self)

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.thread = None

    # -- lifecycle
    @property
    def port(self):
        return self.httpd.server_address[1]

    @property
    def url(self):
        return f"http://127.0.0.1:{self.port}"

    def start(self):
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        """Stops listening and cuts every open connection: the API is gone."""
        if self.thread is not None:
            self.httpd.shutdown()
            self.thread.join(10)
            self.thread = None
        self.httpd.server_close()
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- what happened
    def detail_requests(self):
        """Conversation ids whose detail was asked for (answered or not), in order."""
        return [r["path"][len(LIST_PATH) + 1:] for r in self.log
                if r["path"].startswith(LIST_PATH + "/")]

    def list_requests(self):
        return [r for r in self.log if r["path"] == LIST_PATH]

    # -- answers
    def _reply(self, h, status, body, headers=None):
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(data)

    def _handle(self, h):
        url = urlsplit(h.path)
        path = unquote(url.path)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        entry = {"method": "GET", "path": path, "query": query,
                 "key_sent": h.headers.get("xi-api-key") is not None, "status": None}
        with self._lock:
            self.log.append(entry)
        if self.delay:
            time.sleep(self.delay)
        status, body, headers = self._answer(h, path, query)
        entry["status"] = status
        if status is None:  # drop the connection unanswered
            h.close_connection = True
            try:
                h.connection.shutdown(2)
            except OSError:
                pass
            return
        self._reply(h, status, body, headers)

    def _answer(self, h, path, query):
        if self.api_key is not None and h.headers.get("xi-api-key") != self.api_key:
            return 401, {"detail": {"status": "invalid_api_key",
                                    "message": "Invalid API key"}}, None
        with self._lock:
            if self.throttle > 0:
                self.throttle -= 1
                return 429, {"detail": {"status": "too_many_concurrent_requests",
                                        "message": "Too many requests"}}, \
                    {"Retry-After": str(self.retry_after)}
        if path == LIST_PATH:
            return self._list(query)
        if path.startswith(LIST_PATH + "/") and "/" not in path[len(LIST_PATH) + 1:]:
            cid = path[len(LIST_PATH) + 1:]
            with self._lock:
                if self.close_after_details is not None and \
                        self.details_served >= self.close_after_details:
                    return None, None, None
                found = next((c for c in self.conversations if c["conversation_id"] == cid), None)
                if found is not None:
                    self.details_served += 1
            if found is None:
                return 404, {"detail": {"status": "conversation_not_found",
                                        "message": "Conversation not found"}}, None
            return 200, found, None
        return 404, {"detail": "Not Found"}, None

    def _list(self, query):
        def int_param(name):
            v = query.get(name)
            return int(v) if v not in (None, "") else None

        try:
            page_size = int_param("page_size") or DEFAULT_PAGE_SIZE
            after = int_param("call_start_after_unix")
            before = int_param("call_start_before_unix")
            offset = int(query["cursor"][len("cur_"):]) if query.get("cursor") else 0
        except ValueError:
            return 422, {"detail": [{"loc": ["query"], "msg": "invalid integer",
                                     "type": "type_error.integer"}]}, None
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            return 422, {"detail": [{"loc": ["query", "page_size"],
                                     "msg": "page_size can not exceed 100",
                                     "type": "value_error"}]}, None
        with self._lock:
            items = [c for c in self.conversations
                     if (not query.get("agent_id") or c["agent_id"] == query["agent_id"])
                     and (after is None or c["metadata"]["start_time_unix_secs"] >= after)
                     and (before is None or c["metadata"]["start_time_unix_secs"] < before)]
        items.sort(key=lambda c: (-c["metadata"]["start_time_unix_secs"], c["conversation_id"]))
        page = items[offset:offset + page_size]
        more = offset + page_size < len(items)
        return 200, {"conversations": [summary_of(c) for c in page],
                     "next_cursor": f"cur_{offset + page_size}" if more else None,
                     "has_more": more}, None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8700)
    ap.add_argument("--key", default="xi-test-key")
    ap.add_argument("--conversations", type=int, default=5)
    args = ap.parse_args()
    convs = [make_conversation(start=1773151000 + i * 60) for i in range(args.conversations)]
    fake = FakeElevenLabs(convs, api_key=args.key, port=args.port).start()
    print(f"fake ElevenLabs API on {fake.url} (key {args.key}); Ctrl-C stops it", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
