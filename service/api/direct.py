"""Client API routes called directly on a plain request, past FastAPI's dependency resolution.

Solving a route's dependencies (the API key, the app's state, the body) cost
a mint more than signing its link (bench/README.md). A ``ClientRoute`` stays
an ordinary FastAPI route: the router matches it, its signature documents
it, and FastAPI's own handler answers every request that is not plain. A
plain request is a JSON object body (``Content-Type: application/json``)
that the route's body model accepts; it is answered by calling the endpoint
with what its dependencies would have given: the body validated, the app's
state, the client of the API key (``deps.request_client``, which refuses as
the dependency does) and the request. Anything else (no body, not JSON, a
field the model refuses…) goes to FastAPI's handler, so every refusal but
the API key's is FastAPI's own, word for word.

The order is FastAPI's: a body that is not JSON is refused before the API key
is looked at, and a key before the body's fields. An endpoint is called
directly only when its parameters are exactly one body model, ``ClientDep``,
``StateDep`` and the ``Request`` (checked when the route is built, router-level
dependencies included), and while no dependency is overridden; otherwise the
route is FastAPI's alone.
"""

from __future__ import annotations

from typing import Any

from fastapi import Request, Response, params
from fastapi import routing as fastapi_routing
from fastapi.dependencies.models import Dependant
from pydantic import BaseModel, ValidationError

from service.api.deps import authenticated_client, get_state, request_client
from service.api.json_body import Handler, JsonRoute, refuse_deep_body

DIRECT_DEPENDENCIES = {authenticated_client: "client", get_state: "state"}
JSON = "application/json"


class ClientRoute(JsonRoute):
    def get_route_handler(self) -> Handler:
        guarded = super().get_route_handler()
        plain = _plain_call(self)
        if plain is None:
            return guarded
        model, names = plain
        fastapi_handler = fastapi_routing.APIRoute.get_route_handler(self)
        endpoint = self.endpoint

        async def handle(request: Request) -> Response:
            await refuse_deep_body(request)
            body = await _json_object(request)
            if body is None or request.app.dependency_overrides:
                return await fastapi_handler(request)
            state = await get_state(request)
            client = await request_client(request, state)
            try:
                value = model.model_validate(body)
            except ValidationError:
                return await fastapi_handler(request)  # its own words for what is wrong
            response: Response = await endpoint(
                **{names["body"]: value, names["client"]: client, names["state"]: state},
                **{names["request"]: request},
            )
            return response

        return handle


async def _json_object(request: Request) -> dict[str, Any] | None:
    """The body, when it is a JSON object that FastAPI would parse the same way."""
    content_type = request.headers.get("content-type", "")
    if content_type.partition(";")[0].strip().lower() != JSON:
        return None
    try:
        body = await request.json()  # parsed once: FastAPI reads it from the request
    except ValueError:
        return None
    return body if type(body) is dict else None


def _plain_call(route: fastapi_routing.APIRoute) -> tuple[type[BaseModel], dict[str, str]] | None:
    """The body model and the endpoint's parameter names, when the endpoint takes exactly
    one body model, ``ClientDep``, ``StateDep`` and the request; None otherwise."""
    # The route as included (router-level dependencies added): what FastAPI's handler uses.
    context = getattr(fastapi_routing, "_effective_route_context_var", None)
    if context is None:
        return None  # another FastAPI: leave the route to it
    effective = context.get()
    included = effective if effective is not None and effective.original_route is route else route
    dependant: Dependant = included.dependant
    if (
        getattr(included, "_embed_body_fields", True)
        or dependant.path_params
        or dependant.query_params
        or dependant.header_params
        or dependant.cookie_params
        or len(dependant.body_params) != 1
        or dependant.request_param_name is None
        or dependant.response_param_name is not None
        or dependant.background_tasks_param_name is not None
        or dependant.security_scopes_param_name is not None
        or dependant.websocket_param_name is not None
        or dependant.http_connection_param_name is not None
    ):
        return None
    names = {"request": dependant.request_param_name}
    for dependency in dependant.dependencies:
        role = DIRECT_DEPENDENCIES.get(dependency.call)  # type: ignore[arg-type]
        if role is None or dependency.name is None or role in names:
            return None
        names[role] = dependency.name
    body = dependant.body_params[0]
    model = body.field_info.annotation
    if (
        len(names) != 3
        or not isinstance(body.field_info, params.Body)
        or isinstance(body.field_info, params.Form)
        or not (isinstance(model, type) and issubclass(model, BaseModel))
    ):
        return None
    names["body"] = body.name
    return model, names
