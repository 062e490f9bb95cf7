"""The behaviour every provider client shares, written once and run for each provider.

The idea of django-anymail's ``WebhookBasicAuthTestCase``: a test module subclasses these cases
with its provider's account, its calls and its success answers, and pytest runs every test below
for that provider. The network is an ``httpx.MockTransport`` (no connection is opened).

- ``ProviderContract``: every request carries the configured timeout; an HTTP 5xx is transient,
  a 4xx a refusal (403: the credentials), a refused connection transient, a lost answer transient
  for a query and ``OutcomeUnknownError`` for a submit (sent once, never again); every error
  names the provider, the call and what the provider said.
- ``StatusWordsContract``: a status word the provider's table lacks is ``UNKNOWN`` (in progress,
  never final), kept raw, and logged once.
- ``TokenContract`` (providers with bearer tokens): one token serves every call; a refused token
  is renewed and the call sent once more with the whole document; a second refusal is an auth
  error; a document that cannot be read again is not resent.
"""

from __future__ import annotations

import io
import logging
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import httpx
import pytest

from tests.providers.helpers import PDF, Answer, MockNetwork, answer_with, document, raising
from worker.providers.base import (
    JobState,
    JobStatus,
    OutcomeUnknownError,
    OutgoingDocument,
    Provider,
    ProviderAuthError,
    ProviderError,
    ProviderPermanentError,
    ProviderTransientError,
    SubmitResult,
)

TIMEOUT = httpx.Timeout(7.0, connect=2.0)
SAID = "zq-7 the provider's own words"  # in every failure page: the error must quote it


def page(status: int) -> Answer:
    reason = httpx.codes.get_reason_phrase(status)
    return answer_with(status, f"<html><body><h1>{status} {reason}</h1><p>{SAID}</p></body></html>")


@dataclass(frozen=True)
class Call:
    """One thing a client does over the network."""

    operation: str  # the operation its errors name
    invoke: Callable[[Provider], object]
    sends: bool = False  # a submit: not safe to repeat, so a lost answer has an unknown outcome
    raises_on_refusal: bool = True  # False: a 4xx is an answer it reports (CallerIP's check)


class ProviderContract(ABC):
    """Shared behaviour of every provider client; subclass once per provider."""

    provider: str  # the registered name

    @abstractmethod
    def client(self, http: httpx.Client) -> Provider:
        """The provider's client for an account of its own, using ``http`` and ``TIMEOUT``."""

    @abstractmethod
    def calls(self) -> list[Call]:
        """Every kind of call the client makes to the provider (the submit among them)."""

    @abstractmethod
    def answer(self, request: httpx.Request) -> httpx.Response:
        """The provider's success answer to any request the calls send."""

    def is_token_request(self, request: httpx.Request) -> bool:
        return False

    # --- plumbing -------------------------------------------------------------------------------
    def failing(self, call: Call, failure: Answer) -> MockNetwork:
        """A network on which ``call``'s own requests fail; token requests still succeed,
        unless the call is the token request itself."""

        def handle(request: httpx.Request) -> httpx.Response:
            if self.is_token_request(request) and call.operation != "token":
                return self.answer(request)
            return failure(request)

        return MockNetwork(handle)

    def provider_requests(self, network: MockNetwork) -> list[httpx.Request]:
        return [r for r in network.requests if not self.is_token_request(r)]

    def fail(self, call: Call, failure: Answer) -> tuple[ProviderError, MockNetwork]:
        network = self.failing(call, failure)
        with pytest.raises(ProviderError) as caught:
            call.invoke(self.client(network.http))
        return caught.value, network

    def assert_names(self, error: ProviderError, call: Call, status: int | None) -> None:
        assert error.provider == self.provider, error
        assert error.operation == call.operation, error
        assert error.http_status == status, error
        prefix = f"{self.provider} {call.operation} failed"
        assert str(error).startswith(prefix), error

    # --- the contract ---------------------------------------------------------------------------
    def test_every_request_carries_the_timeout(self) -> None:
        network = MockNetwork(self.answer)
        client = self.client(network.http)
        for call in self.calls():
            before = len(network.requests)
            call.invoke(client)
            assert len(network.requests) > before, f"{call.operation} sent nothing"
        assert [r.extensions["timeout"] for r in network.requests] == [TIMEOUT.as_dict()] * len(
            network.requests
        )

    def test_a_server_error_is_transient(self) -> None:
        for call in self.calls():
            error, _ = self.fail(call, page(503))
            assert type(error) is ProviderTransientError, (call.operation, error)
            self.assert_names(error, call, 503)
            assert SAID in error.provider_message, error

    def test_a_refusal_is_permanent(self) -> None:
        for call in self.calls():
            if not call.raises_on_refusal:
                continue
            error, _ = self.fail(call, page(400))
            assert type(error) is ProviderPermanentError, (call.operation, error)
            self.assert_names(error, call, 400)
            assert SAID in error.provider_message, error

    def test_refused_credentials_are_an_auth_error(self) -> None:
        for call in self.calls():
            error, _ = self.fail(call, page(403))
            assert type(error) is ProviderAuthError, (call.operation, error)
            self.assert_names(error, call, 403)
            assert SAID in error.provider_message, error

    @pytest.mark.parametrize("failure", [httpx.ConnectError, httpx.ConnectTimeout])
    def test_a_refused_connection_is_transient(self, failure: type[httpx.TransportError]) -> None:
        for call in self.calls():
            error, _ = self.fail(call, raising(failure, "no route to the provider"))
            assert type(error) is ProviderTransientError, (call.operation, error)
            self.assert_names(error, call, None)
            assert "could not connect: no route to the provider" in error.provider_message

    @pytest.mark.parametrize("failure", [httpx.ReadTimeout, httpx.RemoteProtocolError])
    def test_a_lost_answer_is_unknown_for_a_submit_and_transient_for_the_rest(
        self, failure: type[httpx.TransportError]
    ) -> None:
        for call in self.calls():
            error, network = self.fail(call, raising(failure, "the answer was lost"))
            expected = OutcomeUnknownError if call.sends else ProviderTransientError
            assert type(error) is expected, (call.operation, error)
            self.assert_names(error, call, None)
            assert f"no answer: {failure.__name__}: the answer was lost" in error.provider_message
            if call.sends:  # the provider may have taken it: never sent twice
                assert len(self.provider_requests(network)) == 1


class StatusWordsContract(ProviderContract):
    """Status words the provider's table does not know (providers with a status call)."""

    @abstractmethod
    def status_answer(self, word: str) -> httpx.Response:
        """The provider's answer to a status query, giving ``word`` as the job's status."""

    @abstractmethod
    def ask_status(self, client: Provider) -> JobStatus:
        """Ask the client for a job's status."""

    def test_an_unknown_status_word_is_unknown_kept_and_logged_once(
        self, caplog: pytest.LogCaptureFixture
    ) -> None:
        word = f"Wibbling{uuid.uuid4().hex[:8]}"  # new to this process: not logged yet

        def handle(request: httpx.Request) -> httpx.Response:
            if self.is_token_request(request):
                return self.answer(request)
            return self.status_answer(word)

        client = self.client(MockNetwork(handle).http)
        logger = f"worker.providers.{self.provider}"
        with caplog.at_level(logging.WARNING, logger=logger):
            first = self.ask_status(client)
            second = self.ask_status(client)
        assert first.state is JobState.UNKNOWN and not first.state.final
        assert first.raw_status == second.raw_status == word
        logged = [(r.name, r.getMessage()) for r in caplog.records if word in r.getMessage()]
        message = f"{self.provider}: unknown status word {word!r}; treated as still in progress"
        assert logged == [(logger, message)]


class OneWayStream(io.BytesIO):
    """A document stream that cannot be rewound (a pipe, an upload being received)."""

    def seekable(self) -> bool:
        return False


class TokenContract(ProviderContract):
    """Bearer tokens: fetched once, renewed when the provider refuses one."""

    @abstractmethod
    def token_answer(self, token: str) -> httpx.Response:
        """The token endpoint's answer handing out ``token``."""

    @abstractmethod
    def submit(self, client: Provider, doc: OutgoingDocument) -> SubmitResult:
        """Submit ``doc`` to a valid destination."""

    def network(self, rest: Answer) -> tuple[MockNetwork, list[str]]:
        """Token requests get ``t1``, ``t2``, …; the others ``rest``."""
        issued: list[str] = []

        def handle(request: httpx.Request) -> httpx.Response:
            if self.is_token_request(request):
                issued.append(f"t{len(issued) + 1}")
                return self.token_answer(issued[-1])
            return rest(request)

        return MockNetwork(handle), issued

    def bearers(self, network: MockNetwork) -> list[str]:
        return [r.headers.get("authorization", "") for r in self.provider_requests(network)]

    def test_one_token_serves_every_call(self) -> None:
        network, issued = self.network(self.answer)
        client = self.client(network.http)
        self.submit(client, document(PDF))
        self.submit(client, document(PDF))
        assert issued == ["t1"]
        assert self.bearers(network) == ["Bearer t1", "Bearer t1"]

    def test_a_refused_token_is_renewed_and_the_whole_call_sent_again(self) -> None:
        answers = iter([answer_with(401, "Unauthorized")])

        def rest(request: httpx.Request) -> httpx.Response:
            return next(answers, self.answer)(request)

        network, issued = self.network(rest)
        result = self.submit(self.client(network.http), document(PDF))
        assert result.job_id
        assert issued == ["t1", "t2"]
        assert self.bearers(network) == ["Bearer t1", "Bearer t2"]
        assert all(PDF in r.content for r in self.provider_requests(network))  # all of it, twice

    def test_a_second_refusal_is_an_auth_error(self) -> None:
        network, issued = self.network(answer_with(401, "Unauthorized"))
        with pytest.raises(ProviderAuthError) as caught:
            self.submit(self.client(network.http), document(PDF))
        submit = next(call for call in self.calls() if call.sends)
        self.assert_names(caught.value, submit, 401)
        assert issued == ["t1", "t2"]
        assert len(self.provider_requests(network)) == 2  # sent again once, not more

    def test_a_refused_token_is_dropped_even_when_the_document_cannot_be_resent(self) -> None:
        answers = iter([answer_with(401, "Unauthorized")])

        def rest(request: httpx.Request) -> httpx.Response:
            return next(answers, self.answer)(request)

        network, issued = self.network(rest)
        client = self.client(network.http)
        one_way = OutgoingDocument("fax.pdf", OneWayStream(PDF), len(PDF))
        with pytest.raises(ProviderTransientError) as caught:
            self.submit(client, one_way)
        assert caught.value.http_status == 401  # nothing was taken: safe to submit again
        assert len(self.provider_requests(network)) == 1
        self.submit(client, document(PDF))
        assert issued == ["t1", "t2"]  # the refused token was not used again
        assert self.bearers(network) == ["Bearer t1", "Bearer t2"]
