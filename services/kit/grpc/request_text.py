"""No request string may hold a NUL character: PostgreSQL text cannot store one
(asyncpg fails the whole query), and no name, id, filter or path of the API
needs one. Checked once, for every RPC, before the servicer runs, so a hostile
request is refused ``INVALID_ARGUMENT`` naming the field instead of failing
wherever the string first reaches the database."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from kit.errors import FieldViolation, InvalidArgument
from kit.grpc.interceptors import PUBLIC_SERVICES, _iterate, _WrappingInterceptor, wrap_handler

NUL = "\x00"


def fields_with_nul(message: Message, prefix: str = "") -> Iterator[str]:
    """The paths (``sources[0].directory.path``, ``labels[k]``) of every string
    in ``message``, nested messages included, that holds a NUL."""
    for field, value in message.ListFields():
        path = f"{prefix}{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_field = field.message_type.fields_by_name["key"]
            value_field = field.message_type.fields_by_name["value"]
            for key, item in value.items():
                if key_field.type == FieldDescriptor.TYPE_STRING and NUL in key:
                    yield f"{path}[{key!r}]"
                yield from _values(value_field, f"{path}[{key!r}]", (item,))
        elif field.is_repeated:
            for index, item in enumerate(value):
                yield from _values(field, f"{path}[{index}]", (item,))
        else:
            yield from _values(field, path, (value,))


def _values(field: FieldDescriptor, path: str, values) -> Iterator[str]:
    for value in values:
        if field.type == FieldDescriptor.TYPE_STRING and NUL in value:
            yield path
        elif field.message_type is not None:
            yield from fields_with_nul(value, f"{path}.")


def check_request_text(message: Message) -> None:
    """Refuse ``message`` when any of its strings holds a NUL."""
    found = list(fields_with_nul(message))
    if found:
        raise InvalidArgument(
            f"{found[0]} holds a NUL character",
            reason="INVALID_ARGUMENT",
            metadata={"field": found[0]},
            field_violations=[
                FieldViolation(path, "must not hold a NUL character") for path in found
            ],
        )


async def _checked(requests: AsyncIterator[Message]) -> AsyncIterator[Message]:
    async for request in requests:
        check_request_text(request)
        yield request


class RequestTextInterceptor(_WrappingInterceptor):
    """Runs ``check_request_text`` on every request message of every RPC (each
    message of a client stream as it arrives). Innermost: the caller is
    authenticated first, and the error interceptor maps the refusal."""

    def skip(self, service: str) -> bool:
        return service in PUBLIC_SERVICES

    def wrap(self, handler, details, service, method):
        # A client stream reaches the servicer as an async iterator of messages:
        # the check becomes one more step of it.
        streaming_requests = handler.request_streaming

        def checked(request):
            if streaming_requests:
                return _checked(request)
            check_request_text(request)
            return request

        async def around(behaviour, request, context):
            return await behaviour(checked(request), context)

        async def around_stream(behaviour, request, context):
            async for response in _iterate(behaviour, checked(request), context):
                yield response

        return wrap_handler(handler, around, around_stream)
