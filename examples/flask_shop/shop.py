"""A tiny shop that uses Action Links for its two emailed flows (run: ``flask --app shop run``).

1. Sign-up: the shop mails an ``activate_user`` link. When the person comes
   back to the success URL, the shop exchanges the redirect's ``code``
   server to server and only then activates the account: the URL alone
   proves nothing, and a replayed one finds its code already used.
2. Vouchers: each order comes with a voucher, mailed as a ``redeem_voucher``
   link bound to its user (``subject``) and redeemable once across every
   link mailed for it (``once_key``). That action's webhook is ``sync``:
   the shop applies the voucher in its webhook, or vetoes the use (order
   cancelled) and Action Links gives the use back.

"Mailing" appends to an outbox shown on the page (a demo has no mail
server). The shop's own data lives in memory; everything it knows about
links comes through ``action_links_client``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from action_links_client import (
    ActionLinksError,
    Client,
    Link,
    Redemption,
    WebhookVerificationError,
    verify_webhook,
)
from flask import Flask, abort, redirect, render_template_string, request, url_for
from werkzeug.wrappers import Response

log = logging.getLogger("flask_shop")

ACTIVATE, VOUCHER = "activate_user", "redeem_voucher"


@dataclass(frozen=True)
class Settings:
    """Where Action Links runs and the shop's credentials there (environment variables)."""

    links_url: str
    api_key: str
    webhook_secret: str

    @classmethod
    def from_env(cls) -> Settings:
        return cls(
            links_url=os.environ.get("ACTION_LINKS_URL", "http://127.0.0.1:8000"),
            api_key=os.environ["ACTION_LINKS_API_KEY"],
            webhook_secret=os.environ["ACTION_LINKS_WEBHOOK_SECRET"],
        )


@dataclass
class User:
    id: str
    email: str
    activated_at: datetime | None = None


@dataclass
class Order:
    id: str
    user_id: str
    cancelled: bool = False


@dataclass
class Voucher:
    id: str
    user_id: str
    order_id: str
    used_at: datetime | None = None


@dataclass
class Store:
    """The shop's own data, in memory; one lock, since requests run in threads."""

    users: dict[str, User] = field(default_factory=dict)
    orders: dict[str, Order] = field(default_factory=dict)
    vouchers: dict[str, Voucher] = field(default_factory=dict)
    outbox: list[tuple[str, str, str]] = field(default_factory=list)  # (to, subject, url)
    hooks_seen: set[str] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self.ids)}"


PAGE = """<!doctype html><meta charset="utf-8"><title>Flask shop</title>
<h1>{{ title }}</h1>{% if text %}<p id="text">{{ text }}</p>{% endif %}
{% if mail %}<div class="mail"><p>Mail to {{ mail[0] }}: {{ mail[1] }}</p>
<p><a id="mail-link" href="{{ mail[2] }}">{{ mail[2] }}</a></p></div>{% endif %}
{% if user %}<p>Account <span id="user">{{ user.id }}</span> ({{ user.email }}):
<span id="status">{{ "active" if user.activated_at else "pending" }}</span></p>
<form method="post" action="/users/{{ user.id }}/orders"><button>Place an order</button></form>
{% endif %}
{% if vouchers %}<ul>{% for v in vouchers %}<li>voucher <span class="voucher">{{ v.id }}</span>
for order {{ v.order_id }}: <span class="voucher-state">{{ "used" if v.used_at else "open" }}</span>
<form method="post" action="/orders/{{ v.order_id }}/cancel"><button>Cancel order</button></form>
</li>{% endfor %}</ul>{% endif %}
<form method="post" action="/signup"><input name="email" type="email" required>
<button>Sign up</button></form>"""


def page(title: str, status: int = 200, **context: Any) -> tuple[str, int]:
    context.setdefault("text", None)
    return render_template_string(PAGE, title=title, **context), status


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """The shop, talking to Action Links with ``settings`` (default: from the environment)."""
    settings = settings or Settings.from_env()
    store = store or Store()
    links = Client(settings.links_url, settings.api_key)
    app = Flask(__name__)
    app.extensions["action_links"] = links
    app.extensions["shop_store"] = store

    def mail(to: str, subject: str, link: Link) -> tuple[str, str, str]:
        """The demo's mail server: the outbox (the URL is never logged: it is the capability)."""
        letter = (to, subject, link.url)
        store.outbox.append(letter)
        log.info("mailed %r to %s (link %s)", subject, to, link.id)
        return letter

    def exchanged(action: str) -> Redemption | tuple[str, int]:
        """The redemption behind this success URL's ``code``, or the page refusing it."""
        code = request.args.get("code", "")
        try:
            redemption = links.exchange(code)
        except ActionLinksError as error:
            if error.status is None or error.status >= 500:
                raise
            # code_used (a replayed URL), code_expired, not_found (typed or tampered).
            return page("This link cannot be used here", 400, text=f"refused: {error.code}")
        if redemption.action != action:
            return page("This link cannot be used here", 400, text="wrong kind of link")
        return redemption

    @app.errorhandler(ActionLinksError)
    def links_down(error: ActionLinksError) -> tuple[str, int]:
        log.warning("Action Links failed: %s %s", type(error).__name__, error.code or "")
        return page("Please try again in a minute", 503, text="the link service is unavailable")

    @app.get("/")
    def home() -> tuple[str, int]:
        return page("Welcome to the shop")

    @app.post("/signup")
    def signup() -> tuple[str, int]:
        email = request.form.get("email", "").strip()
        if "@" not in email:
            return page("Sign up", 400, text="an email address, please")
        with store.lock:
            user = User(store.new_id("u"), email)
            store.users[user.id] = user
        link = links.mint(ACTIVATE, subject=user.id)
        letter = mail(email, "Activate your account", link)
        return page("Check your mail", 201, mail=letter, user=user)

    @app.get("/activated")
    def activated() -> tuple[str, int]:
        redemption = exchanged(ACTIVATE)
        if not isinstance(redemption, Redemption):
            return redemption
        with store.lock:
            user = store.users.get(redemption.subject or "")
            if user is None:
                return page("Unknown account", 404)
            user.activated_at = user.activated_at or datetime.now(UTC)
        return page("Your account is active", user=user)

    @app.get("/activation-failed")
    def activation_failed() -> tuple[str, int]:
        return page("Activation failed", 410, text=request.args.get("error", "unknown"))

    @app.get("/users/<user_id>")
    def account(user_id: str) -> tuple[str, int]:
        user = store.users.get(user_id) or abort(404)
        mine = [v for v in store.vouchers.values() if v.user_id == user_id]
        return page("Your account", user=user, vouchers=mine)

    @app.post("/users/<user_id>/orders")
    def place_order(user_id: str) -> tuple[str, int]:
        user = store.users.get(user_id) or abort(404)
        if user.activated_at is None:
            return page("Activate your account first", 403, user=user)
        with store.lock:
            order = Order(store.new_id("o"), user.id)
            voucher = Voucher(store.new_id("v"), user.id, order.id)
            store.orders[order.id] = order
            store.vouchers[voucher.id] = voucher
        return page("Thank you for your order", 201, mail=mail_voucher(voucher), user=user)

    def mail_voucher(voucher: Voucher) -> tuple[str, str, str]:
        # Every link mailed for one voucher shares one use (once_key).
        link = links.mint(
            VOUCHER,
            subject=voucher.user_id,
            data={"voucher": voucher.id},
            once_key=f"voucher:{voucher.id}",
            max_uses=1,
        )
        return mail(store.users[voucher.user_id].email, "Your voucher", link)

    @app.post("/vouchers/<voucher_id>/mail")
    def remail_voucher(voucher_id: str) -> tuple[str, int]:
        voucher = store.vouchers.get(voucher_id) or abort(404)
        return page("Voucher mailed again", 201, mail=mail_voucher(voucher))

    @app.post("/orders/<order_id>/cancel")
    def cancel_order(order_id: str) -> Response:
        order = store.orders.get(order_id) or abort(404)
        order.cancelled = True
        return redirect(url_for("account", user_id=order.user_id), 303)

    @app.post("/hooks/action-links")
    def webhook() -> tuple[dict[str, str] | str, int]:
        """The ``sync`` webhook: 2xx applies the voucher; 4xx vetoes and the use is given back."""
        try:
            event = verify_webhook(settings.webhook_secret, request.get_data(), request.headers)
        except WebhookVerificationError:
            return {"error": "bad_signature"}, 400
        data = event["data"]
        if event["type"] != "link.redeemed" or data["action"] != VOUCHER:
            return "", 204
        with store.lock:
            if request.headers["webhook-id"] in store.hooks_seen:
                return "", 204  # a retry of a message already applied
            voucher = store.vouchers.get((data.get("data") or {}).get("voucher", ""))
            if voucher is None or voucher.user_id != data["subject"]:
                return {"error": "unknown_voucher"}, 422
            if store.orders[voucher.order_id].cancelled:
                return {"error": "order_cancelled"}, 409
            if voucher.used_at is not None:
                return {"error": "voucher_used"}, 409
            voucher.used_at = datetime.now(UTC)
            store.hooks_seen.add(request.headers["webhook-id"])
        return "", 204

    @app.get("/voucher/applied")
    def voucher_applied() -> tuple[str, int]:
        redemption = exchanged(VOUCHER)
        if not isinstance(redemption, Redemption):
            return redemption
        user = store.users.get(redemption.subject or "") or abort(404)
        mine = [v for v in store.vouchers.values() if v.user_id == user.id]
        return page("Your voucher is applied", user=user, vouchers=mine)

    @app.get("/voucher/refused")
    def voucher_refused() -> tuple[str, int]:
        why = request.args.get("reason") or request.args.get("error", "unknown")
        return page("Your voucher was not applied", 409, text=why)

    return app
