"""`/vote/{token}/{tool}[/{ship|skip}]`: a reader answers "Would you ship it?" from the email.

GET only shows a page with the question and one button (link scanners and mail previews open
every link; they must never vote); the POST records. The token is signed for the `vote` purpose
and names the reader and the issue; the tool must be one the issue carried, so a token cannot
vote on anything else. One vote per reader per tool: voting again changes it. POSTs are
rate-limited per client.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from digest.database import session_scope, utcnow
from digest.database.models import Comparison, Issue, IssueComparison, Tool
from digest.outcomes.votes import reader_vote, record_vote
from digest.settings import Settings
from digest.web.pages import environment, private_page
from subscribers.links import parse_vote_subject
from subscribers.models import Subscriber
from subscribers.routes import RateLimiter
from subscribers.tokens import BadToken, Signer

CHOICES = {"ship": True, "skip": False}
# Issues a reader could have received (a draft or a skipped week was never mailed).
VOTABLE_STATES = ("sending", "paused", "sent")
VOTES_PER_CLIENT = 60  # per window: far more than one reader clicks in an issue
VOTE_WINDOW = 600.0


@dataclass(frozen=True)
class Ballot:
    subscriber_id: int
    issue_id: int
    issue_key: str
    tool_id: int
    tool_name: str
    tool_slug: str


def find_ballot(session: Session, signer: Signer, token: str, tool_slug: str) -> Ballot | None:
    """What a vote link stands for, or None when the token is not a genuine vote token of a
    reader who still exists, or the tool was not in that reader's issue."""
    try:
        claim = signer.verify(token, "vote")
        subscriber_id, issue_id = parse_vote_subject(claim.subject)
    except (BadToken, ValueError):
        return None
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None or not signer.held_by(claim, subscriber.email,
                                                since=subscriber.created_at):
        return None  # gone, or the id is not the reader's the link was made for
    issue = session.get(Issue, issue_id)
    if issue is None or issue.status not in VOTABLE_STATES:
        return None
    tool = session.exec(
        select(Tool).join(Comparison, (Comparison.tool_a_id == Tool.id)
                          | (Comparison.tool_b_id == Tool.id))
        .join(IssueComparison, IssueComparison.comparison_id == Comparison.id)
        .where(IssueComparison.issue_id == issue_id, Tool.slug == tool_slug)).first()
    if tool is None:
        return None
    return Ballot(subscriber_id, issue_id, issue.key, tool.id, tool.name, tool.slug)


def create_router(settings: Settings, engine: Engine, signer: Signer, *,
                  clock: Callable[[], dt.datetime] = utcnow,
                  client_key: Callable[[Request], str] | None = None,
                  rate_limiter: RateLimiter | None = None) -> APIRouter:
    router = APIRouter(tags=["votes"])
    env = environment(settings)
    limiter = rate_limiter or RateLimiter(VOTES_PER_CLIENT, VOTE_WINDOW,
                                          lambda: clock().timestamp())
    key_of = client_key or (lambda request: request.client.host if request.client else "")
    base = settings.base_url

    def bad_link() -> Response:
        return private_page(env, "message.html.j2", 400, title="This link does not work",
                            link=("See the archive", f"{base}/archive"), paragraphs=[
                                "It may be incomplete (some mail apps break long links across "
                                "lines), changed, or too old. Use the Yes or No link in the "
                                "email again."])

    def ballot_for(token: str, tool: str, choice: str | None) -> Ballot | None:
        if choice is not None and choice not in CHOICES:
            return None
        with Session(engine) as session:
            return find_ballot(session, signer, token, tool)

    def confirm_page(token: str, tool: str, choice: str | None) -> Response:
        ballot = ballot_for(token, tool, choice)
        if ballot is None:
            return bad_link()
        with Session(engine) as session:
            current = reader_vote(session, ballot.subscriber_id, ballot.tool_id)
        return private_page(env, "vote.html.j2", title=f"Would you ship {ballot.tool_name}?",
                            ballot=ballot, choice=choice, current=current,
                            action=f"{base}/vote/{token}/{ballot.tool_slug}",
                            archive_url=f"{base}/archive/{ballot.issue_key}")

    @router.get("/vote/{token}/{tool}")
    def ask(token: str, tool: str) -> Response:
        return confirm_page(token, tool, None)

    @router.get("/vote/{token}/{tool}/{choice}")
    def confirm(token: str, tool: str, choice: str) -> Response:
        return confirm_page(token, tool, choice)

    @router.post("/vote/{token}/{tool}/{choice}")
    def vote(request: Request, token: str, tool: str, choice: str) -> Response:
        retry = limiter.hit(key_of(request))
        if retry is not None:
            response = private_page(env, "message.html.j2", 429, title="Too many votes",
                                    link=None, paragraphs=[
                                        "Votes from your network came in faster than a person "
                                        "clicks. Try again in a few minutes."])
            response.headers["Retry-After"] = str(max(1, int(retry)))
            return response
        ballot = ballot_for(token, tool, choice)
        if ballot is None:
            return bad_link()
        with session_scope(engine) as session:
            record_vote(session, subscriber_id=ballot.subscriber_id, tool_id=ballot.tool_id,
                        issue_id=ballot.issue_id, ship=CHOICES[choice], now=clock())
        return private_page(env, "vote.html.j2", title="Thanks for your vote", ballot=ballot,
                            choice=choice, current=CHOICES[choice], recorded=True,
                            action=f"{base}/vote/{token}/{ballot.tool_slug}",
                            archive_url=f"{base}/archive/{ballot.issue_key}")

    return router
