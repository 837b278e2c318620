"""Pydantic models of the HTTP contract (API.md), and nothing else."""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, Literal, Required

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_serializer,
    with_config,
)
from typing_extensions import TypedDict

from service.json_depth import MAX_DATA_DEPTH
from service.redirects import InvalidUrl, validate_absolute_url
from service.tokens import MAX_TOKEN_LENGTH, TYPED_CODE_DIGITS

DEFAULT_TTL = 86_400
DEFAULT_MAX_TTL = 2_592_000
MAX_TTL_CAP = 31_536_000  # one year: bounds how long a revocation must be kept
MAX_BATCH = 1000

Slug = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
ACTION_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$"
# PostgreSQL text cannot hold NUL: refuse it up front rather than fail when it is stored.
NO_NUL_PATTERN = r"^[^\x00]*$"
URL_SAFE_ID_PATTERN = r"^[A-Za-z0-9_-]+$"
# A name or label people read, stored as text.
Text = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]


def _absolute_url(value: str) -> str:
    try:
        return validate_absolute_url(value)
    except InvalidUrl as exc:
        raise ValueError(f"not an acceptable absolute URL: {exc}") from None


AbsoluteUrl = Annotated[
    str,
    Field(
        max_length=2048,
        description="An absolute http(s) URL with a host; no userinfo, dot segments, "
        "backslashes, whitespace or control characters",
    ),
    AfterValidator(_absolute_url),
]


NUL_REFUSED = "must not contain NUL (U+0000) characters"


def _refuse_nul(value: Any) -> Any:
    strings = value if isinstance(value, list) else [value]
    if any(isinstance(s, str) and "\x00" in s for s in strings):
        raise ValueError(NUL_REFUSED)
    return value


def _plain_json(value: Any) -> Any:
    """JSON that every consumer accepts: finite numbers, valid Unicode, nested at most 32 levels.

    Python's parser reads ``NaN``, ``Infinity``, ``1e999`` and lone surrogate
    escapes (``"\\ud800"``); PostgreSQL's JSON and the token encoder refuse
    them, so they would fail later as a 500 instead of now as a 422. Deep
    nesting makes every recursive encoder fail (``service.json_depth``).

    One walk of the value for all three (it runs for every minted link's
    ``data``), containers only on the stack; too deep is said before anything
    else found, otherwise the first problem in the walk's order. ASCII text and
    numbers other than floats are passed over without a call.
    """
    kind = type(value)
    if kind is not dict and kind is not list:
        problem = _scalar_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value
    problem = None
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        depth += 1
        if depth > MAX_DATA_DEPTH:
            raise ValueError(f"nested more than {MAX_DATA_DEPTH} levels deep")
        if type(item) is dict:
            if problem is None:
                for key in item:
                    if type(key) is not str or not key.isascii():
                        problem = problem or _scalar_problem(key)
            item = item.values()
        for child in item:
            kind = type(child)
            if kind is str:
                if problem is None and not child.isascii():
                    problem = _scalar_problem(child)
            elif kind is dict or kind is list:
                stack.append((child, depth))
            elif kind is float and problem is None:
                problem = _scalar_problem(child)
    if problem is not None:
        raise ValueError(problem)
    return value


def _scalar_problem(value: Any) -> str | None:
    kind = type(value)
    if kind is str and not value.isascii() and not _utf8(value):
        return "text must be valid Unicode (no lone surrogates)"
    if kind is float and not math.isfinite(value):
        return "numbers must be finite (no NaN or Infinity)"
    return None


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _declare_no_nul(schema: dict[str, Any]) -> None:
    """Say in the JSON schema what request bodies refuse: text of their fields holds no NUL.

    A client generated from the OpenAPI document (or a fuzzer) then knows the rule
    instead of meeting it as a 422; fields with a pattern, format or fixed values
    already say what they accept.
    """
    for field in schema.get("properties", {}).values():
        for variant in field.get("anyOf", [field]):
            if variant.get("type") == "array":
                variant = variant.get("items", {})
            if variant.get("type") == "string" and not variant.keys() & {
                "pattern",
                "format",
                "enum",
                "const",
            }:
                variant["pattern"] = NO_NUL_PATTERN


class Plain(BaseModel):
    """A request body: strict types, no unknown fields, text without NUL (said in its
    schema; refused by ``Strict``'s validator, or by ``NoNul`` and patterns)."""

    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_declare_no_nul)


class Strict(Plain):
    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any, info: ValidationInfo) -> Any:
        """PostgreSQL text cannot hold U+0000: refused here (422), not by the database (500).

        Fields of any JSON (``data``) are exempt: JSON stores NUL as an escape.
        """
        field = cls.model_fields.get(info.field_name or "")
        if field is not None and field.annotation is Any:
            return value
        return _refuse_nul(value)


def _refuse_nul_text(value: str) -> str:
    if "\x00" in value:
        raise ValueError(NUL_REFUSED)
    return value


# Text without NUL, checked after the field's other rules, as ``Strict`` does for every
# field: for a model validated so often (``LinkRequest``) that a validator per field shows.
NoNul = AfterValidator(_refuse_nul_text)


# --- links -----------------------------------------------------------------


# The rules of a mint request's fields, named once for ``LinkRequest`` and ``LinkFields``.
ActionName = Annotated[str, Field(min_length=1, max_length=64), NoNul]
Subject = Annotated[str, Field(max_length=200, pattern=NO_NUL_PATTERN)] | None
LinkData = Annotated[Any, AfterValidator(_plain_json)]
ExpiresIn = Annotated[int, Field(ge=1)] | None
MaxUses = Annotated[int, Field(ge=1, le=2_000_000_000)] | None
OnceKey = Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)] | None
# Checked against the allowlist by the minting code, which answers
# redirect_not_allowed for any string that is not an allowed URL.
RedirectUrl = Annotated[str, Field(max_length=2048), NoNul] | None
SUPERSEDE_NEEDS_SUBJECT = "supersede needs a subject: it revokes the subject's earlier links"


# Not ``Strict``: its text fields refuse NUL each on its own (``NoNul``, or a pattern),
# with the same errors, instead of a validator run for every field of every link of a
# batch (bench/README.md). No docstring: it would become the OpenAPI description.
class LinkRequest(Plain):
    action: ActionName
    subject: Subject = None
    data: LinkData = None
    expires_in: ExpiresIn = None
    max_uses: MaxUses = None
    once_key: OnceKey = None
    success_url: RedirectUrl = None
    failure_url: RedirectUrl = None
    code: bool | None = Field(
        default=None,
        description="true: the answer carries a 6-digit `code` a person can type instead of "
        "following the link (`POST /v1/links/redeem`); null: the action's `code` setting",
    )
    supersede: bool = Field(
        default=False,
        description="true (needs `subject`): every earlier link of this client for the same "
        "subject and action redeems to `error=revoked` from now on; this link works",
    )

    @field_validator("supersede", mode="after")
    @classmethod
    def _supersede_needs_subject(cls, value: bool, info: ValidationInfo) -> bool:
        if value and info.data.get("subject") is None:
            raise ValueError(SUPERSEDE_NEEDS_SUBJECT)
        return value


@with_config(Plain.model_config)
class LinkFields(TypedDict, total=False):
    """A batch item as ``LinkRequest`` validates it, as a dict of the fields it has.

    A batch's items are validated in one call without a model per item (bench/README.md).
    The same rules, except ``supersede`` without a ``subject``, which the minting code
    refuses; anything refused is validated again as a ``LinkRequest`` (``mint.ITEMS``),
    so the errors are its own. A test holds the two to the same answers.
    """

    action: Required[ActionName]
    subject: Subject
    data: LinkData
    expires_in: ExpiresIn
    max_uses: MaxUses
    once_key: OnceKey
    success_url: RedirectUrl
    failure_url: RedirectUrl
    code: bool | None
    supersede: bool


# API.md: a link's answer "also has" these when they apply; otherwise it has no such key.
LINK_EXTRAS = ("code", "headers")


class LinkResponse(BaseModel):
    id: str
    url: str
    token: str
    action: str
    subject: str | None
    expires_at: datetime
    max_uses: int | None
    code: str | None = Field(
        default=None,
        description="The link's 6-digit typed code; only present for a link minted with one",
        examples=["482913"],
    )
    headers: dict[str, str] | None = Field(
        default=None,
        description="The RFC 8058 one-click unsubscribe headers, ready to copy into the mail; "
        "only present for a link of a `one_click` action",
        examples=[
            {
                "List-Unsubscribe": "<https://links.example.com/r/eyJsIjoi...>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            }
        ],
    )

    @model_serializer(mode="wrap")
    def _without_absent_extras(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        """API.md: the answer "also has" ``code`` and ``headers`` when they apply; else no key."""
        body: dict[str, Any] = handler(self)
        for key in LINK_EXTRAS:
            if body.get(key) is None:
                body.pop(key, None)
        return body


# Not ``Strict``: its one field holds objects, where ``Strict``'s NUL check finds no text.
class BatchRequest(Plain):
    # Each item is validated on its own by the minting code, so that its errors
    # name its index; the OpenAPI document shows the items as what they must be.
    links: Annotated[
        list[dict[str, Any]],
        Field(min_length=1, max_length=MAX_BATCH),
        WithJsonSchema(
            {
                "type": "array",
                "items": {"$ref": "#/components/schemas/LinkRequest"},
                "minItems": 1,
                "maxItems": MAX_BATCH,
            }
        ),
    ]


class BatchResponse(BaseModel):
    links: list[LinkResponse]


# --- link lifecycle and audit log ------------------------------------------


class LinkStatus(BaseModel):
    id: str
    uses: int
    revoked: bool
    first_redeemed_at: datetime | None
    last_redeemed_at: datetime | None


class InspectRequest(Strict):
    # Longer than any token we issue: refused as a validation error, never parsed.
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


class InspectedLink(BaseModel):
    id: str
    action: str
    subject: str | None
    data: Any
    expires_at: datetime
    max_uses: int | None
    uses: int


InspectReason = Literal["invalid", "expired", "used", "revoked", "disabled"]


class InspectResponse(BaseModel):
    valid: bool
    reason: InspectReason | None
    link: InspectedLink | None


class SubjectRevocationRequest(Strict):
    subject: Annotated[str, Field(min_length=1, max_length=200, pattern=NO_NUL_PATTERN)]
    action: Annotated[str, Field(min_length=1, max_length=64)] | None = None


class SubjectRevocationOut(BaseModel):
    subject: str
    action: str | None
    revoked_at: datetime


class DeliveryOut(BaseModel):
    status: str  # "none" when the redemption has no webhook job
    attempts: int
    last_error: str | None


Via = Literal["link", "code", "one_click"]


class RedemptionOut(BaseModel):
    id: str
    link_id: str
    action: str
    subject: str | None
    data: Any
    use: int
    max_uses: int | None
    once_key: str | None = Field(description="The once key whose budget this use drew on")
    via: Via = Field(
        description="How it was redeemed: following the link (or its confirm page), "
        "a typed code, or a mail provider's one-click POST"
    )
    redeemed_at: datetime
    exchanged_at: datetime | None = Field(
        description="When the caller's backend received this redemption server to server: "
        "the exchange of the success redirect's `code`, or the answer to a typed code"
    )
    delivery: DeliveryOut


# --- finishing the flow in the caller's app -----------------------------------


class ExchangeRequest(Strict):
    code: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            description="The `code` of a success redirect",
            examples=["WyJzaG9wIiwiN2JnV...Ql0.hEAp9S50cfciUGDV9YspD0WpzULDvQZFXAwQgm1zCc"],
        ),
    ]


class CodeRedeemRequest(Strict):
    token: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_TOKEN_LENGTH,
            description="The link's `token`, as the mint answered it (kept server-side)",
        ),
    ]
    code: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description=f"The {TYPED_CODE_DIGITS} digits the person typed; spaces and "
            "hyphens between them are ignored",
            examples=["482913"],
        ),
    ]


class ResendRequest(Strict):
    resend: Annotated[
        str,
        Field(
            min_length=1,
            max_length=MAX_TOKEN_LENGTH,
            description="The `resend` of an `error=expired` failure redirect",
            examples=[
                "WyJ7XCJpXCI6XCJRbTl2ZEdOaGJYQXRNVEl6...fQ.3kq0kSx9Y2rHq1Q0rW1lN1oV7bJf3b5f3m0mQ"
            ],
        ),
    ]


class RedemptionPage(BaseModel):
    items: list[RedemptionOut]
    next_cursor: str | None


# --- webhooks (what the client's receiver gets) ------------------------------


class LinkRedeemedData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    redemption_id: str
    link_id: str
    action: str
    subject: str | None
    data: Any = Field(description="the link's `data`, as minted (object keys sorted)")
    use: int = Field(description="which use of the link (or of its once-key budget) this is")
    max_uses: int | None
    redeemed_at: datetime


class LinkRedeemedEvent(BaseModel):
    """The body of the ``link.redeemed`` webhook (built in ``service.webhooks``)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["link.redeemed"]
    timestamp: datetime = Field(description="the redemption's time (the same on every retry)")
    data: LinkRedeemedData


# --- admin -----------------------------------------------------------------


class ClientCreate(Strict):
    id: Slug
    name: Text
    webhook_url: AbsoluteUrl | None = None
    allowed_redirects: Annotated[list[AbsoluteUrl], Field(max_length=100)] = Field(
        default_factory=list
    )


class ClientUpdate(Strict):
    name: Text | None = None
    webhook_url: AbsoluteUrl | None = None
    allowed_redirects: Annotated[list[AbsoluteUrl], Field(max_length=100)] | None = None
    enabled: bool | None = None


class ClientOut(BaseModel):
    id: str
    name: str
    webhook_url: str | None
    allowed_redirects: list[str]
    enabled: bool
    created_at: datetime
    updated_at: datetime


class ClientCreated(ClientOut):
    webhook_secret: str


class WebhookSecretOut(BaseModel):
    webhook_secret: str


class KeyCreated(BaseModel):
    id: str
    key: str
    prefix: str
    created_at: datetime


class KeyOut(BaseModel):
    id: str
    prefix: str
    created_at: datetime


class ActionPut(Strict):
    success_url: AbsoluteUrl
    failure_url: AbsoluteUrl | None = None
    ttl: Annotated[int, Field(ge=1, le=MAX_TTL_CAP)] = DEFAULT_TTL
    max_ttl: Annotated[int, Field(ge=1, le=MAX_TTL_CAP)] = DEFAULT_MAX_TTL
    max_uses: Annotated[int, Field(ge=1, le=2_000_000_000)] | None = 1
    confirm: Literal["none", "page", "auto"] = "none"
    delivery: Literal["none", "async", "sync"] = "none"
    enabled: bool = True
    label: Text | None = None
    code: bool = Field(
        default=False,
        description="Links of this action carry a typed code, unless the mint request says "
        "otherwise",
    )
    one_click: bool = Field(
        default=False,
        description="RFC 8058 one-click unsubscribe: a mail provider's `POST` of "
        "`List-Unsubscribe=One-Click` redeems the link whatever `confirm` says, and the mint "
        "answer carries the mail `headers`",
    )


class ActionOut(BaseModel):
    client_id: str
    name: str
    label: str | None
    success_url: str
    failure_url: str | None
    ttl: int
    max_ttl: int
    max_uses: int | None
    confirm: str
    delivery: str
    enabled: bool
    code: bool
    one_click: bool
    created_at: datetime
    updated_at: datetime


# --- operations -------------------------------------------------------------


class Health(BaseModel):
    status: Literal["ok"]


class Ready(BaseModel):
    status: Literal["ready"]
    schema_: str = Field(alias="schema", description="the database's migration revision")


class NotReady(BaseModel):
    status: Literal["unavailable"]
    reason: str


# --- errors -----------------------------------------------------------------


class ProblemError(BaseModel):
    """One entry of a 422's ``errors``: which field (``loc``) and what is wrong with it."""

    loc: list[str | int]
    msg: str
    type: str | None = None
    index: int | None = None  # batch minting: the item's position
    code: str | None = None  # batch minting: the item's problem code


class Problem(BaseModel):
    """RFC 9457 problem details, as every JSON error is rendered (the OpenAPI document's schema)."""

    type: str = "about:blank"
    title: str
    status: int
    code: str
    detail: str
    errors: list[ProblemError] | None = Field(
        default=None, description="validation_error only: one entry per problem"
    )
