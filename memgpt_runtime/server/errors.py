"""Errors the HTTP layer answers with, in OpenAI's shape `{"error": {"message", "type", "param", "code"}}`."""

from __future__ import annotations


class APIError(Exception):
    """An error response: HTTP status, OpenAI error type and code, the request field at fault, extra headers."""

    status = 400
    type = "invalid_request_error"

    def __init__(
        self,
        message: str,
        param: str | None = None,
        code: str | None = None,
        status: int | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message, self.param, self.code = message, param, code
        self.status = status if status is not None else self.status
        self.headers = headers or {}

    def body(self) -> dict:
        return error_body(self.message, self.type, self.param, self.code)


class BadRequest(APIError):
    status, type = 400, "invalid_request_error"


class Unauthorized(APIError):
    status, type = 401, "authentication_error"


class NotFound(APIError):
    status, type = 404, "not_found_error"


class TooLarge(APIError):
    status, type = 413, "invalid_request_error"


class Unavailable(APIError):
    """The server cannot take the request now (loading, queue full, shutting down): retry after `Retry-After`."""

    status, type = 503, "server_error"

    def __init__(self, message: str, code: str, retry_after: int = 1):
        super().__init__(message, code=code, headers={"Retry-After": str(retry_after)})


class ServerError(APIError):
    status, type = 500, "server_error"


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}
