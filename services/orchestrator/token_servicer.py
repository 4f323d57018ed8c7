"""``vectorops.orchestrator.v1.TokenService``: maps messages to the token
application and back, nothing more. The clear token appears in one place:
the response of the CreateToken call that made it."""

from __future__ import annotations

from datetime import datetime

import grpc

from kit.auth import Role
from kit.grpc.interceptors import current_principal
from kit.grpc.request_times import request_duration
from kit.tokens.records import StoredToken, TokenState
from orchestrator.messages import timestamp
from orchestrator.token_app import TokenApp, TokenRequest
from vectorops.common.v1 import principal_pb2
from vectorops.orchestrator.v1 import token_service_pb2 as api
from vectorops.orchestrator.v1 import token_service_pb2_grpc

Context = grpc.aio.ServicerContext

_ROLES = {
    Role.USER: principal_pb2.ROLE_USER,
    Role.ADMIN: principal_pb2.ROLE_ADMIN,
    Role.SERVICE: principal_pb2.ROLE_SERVICE,
}
_ROLE_NAMES = {number: role.value for role, number in _ROLES.items()}
_STATES = {
    TokenState.ACTIVE: api.TOKEN_STATE_ACTIVE,
    TokenState.EXPIRED: api.TOKEN_STATE_EXPIRED,
    TokenState.REVOKED: api.TOKEN_STATE_REVOKED,
}


def token_message(token: StoredToken, now: datetime) -> api.Token:
    return api.Token(
        id=token.id,
        principal_id=token.principal_id,
        role=_ROLES[token.role],
        description=token.description,
        create_time=timestamp(token.created_at),
        created_by=token.created_by,
        expire_time=timestamp(token.expires_at),
        revoke_time=timestamp(token.revoked_at),
        revoked_by=token.revoked_by or "",
        state=_STATES[token.state(now)],
    )


class TokenServicer(token_service_pb2_grpc.TokenServiceServicer):
    def __init__(self, app: TokenApp) -> None:
        self._app = app

    async def CreateToken(
        self, request: api.CreateTokenRequest, context: Context
    ) -> api.CreateTokenResponse:
        created = await self._app.create(
            current_principal(),
            TokenRequest(
                principal_id=request.principal_id,
                role=_ROLE_NAMES.get(request.role, ""),
                description=request.description,
                ttl=request_duration(request, "ttl"),
                request_id=request.request_id,
            ),
        )
        return api.CreateTokenResponse(
            token=token_message(created.token, self._app.now()),
            bearer_token=created.bearer_token,
            replayed=created.replayed,
        )

    async def ListTokens(
        self, request: api.ListTokensRequest, context: Context
    ) -> api.ListTokensResponse:
        tokens, next_page = await self._app.list(
            current_principal(), request.principal_id, request.page_size, request.page_token
        )
        now = self._app.now()
        return api.ListTokensResponse(
            tokens=[token_message(token, now) for token in tokens], next_page_token=next_page
        )

    async def RevokeToken(
        self, request: api.RevokeTokenRequest, context: Context
    ) -> api.RevokeTokenResponse:
        revoked = await self._app.revoke(current_principal(), request.token_id, request.request_id)
        return api.RevokeTokenResponse(
            token=token_message(revoked.token, self._app.now()), replayed=revoked.replayed
        )
