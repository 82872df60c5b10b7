"""``/ui/deployments`` and ``/ui/rollouts``: traffic splits, shadows, fallbacks and rollouts;
start, promote and abort a rollout."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Response

from app.console._chart import line_chart
from app.console._clients import Clients
from app.console._forms import done, scopes_of, text
from app.console._render import list_page, page
from app.console._session import checked_form
from contracts.common import InvalidInput
from contracts.inference import (
    AbortRollout,
    GetDeployment,
    GetRollout,
    InferenceService,
    ListDeployments,
    ListRollouts,
    PromoteRollout,
    RolloutPolicy,
    StartRollout,
)

__all__ = ["deployment_handlers"]

PAGE = 50
SCOPES = scopes_of(InferenceService, "start_rollout", "promote_rollout", "abort_rollout")


def deployment_handlers(q: Clients) -> list[Any]:
    """The deployment and rollout pages and their actions."""

    deployments = list_page(
        "/deployments",
        "deployments.html",
        "Deployments",
        lambda cursor: q.inference.list_deployments(ListDeployments(limit=PAGE, cursor=cursor)),
    )

    @get("/deployments/{name:str}")
    async def deployment(
        request: Request[Any, Any, Any], name: FromPath[str], cursor: FromQuery[str | None] = None
    ) -> Response[str]:
        found = await q.inference.get_deployment(GetDeployment(name=name))
        rollouts = await q.inference.list_rollouts(
            ListRollouts(deployment=name, limit=PAGE, cursor=cursor or None)
        )
        return page(
            request,
            "deployment.html",
            title=f"Deployment {name}",
            deployment=found,
            rollouts=rollouts,
            scopes=SCOPES,
            default_steps=", ".join(f"{s:g}" for s in RolloutPolicy().steps),
        )

    @get("/rollouts/{rollout_id:str}")
    async def rollout(request: Request[Any, Any, Any], rollout_id: FromPath[str]) -> Response[str]:
        found = await q.inference.get_rollout(GetRollout(id=rollout_id))
        chart = line_chart(
            [step.percent for step in found.history],
            label=f"share of traffic to {found.candidate} at each decision (percent)",
            y_max=100.0,
            x_label="decision",
        )
        return page(
            request, "rollout.html", title="Rollout", rollout=found, chart=chart, scopes=SCOPES
        )

    @post("/deployments/{name:str}/rollouts", opt={"scope": SCOPES["start_rollout"]})
    async def start(request: Request[Any, Any, Any], name: FromPath[str]) -> Redirect:
        form = await checked_form(request)
        started = await q.inference.start_rollout(
            StartRollout(
                deployment=name,
                candidate=text(form, "candidate"),
                baseline=text(form, "baseline", required=False) or None,
                policy=_policy(form),
            )
        )
        return done(f"/ui/rollouts/{started.id}", f"rollout of {started.candidate} started")

    promote = _decision(q, "promote", "promoted")
    abort = _decision(q, "abort", "aborted")
    return [deployments, deployment, rollout, start, promote, abort]


def _decision(q: Clients, decision: str, outcome: str) -> Any:
    """``POST /ui/rollouts/{id}/<decision>``: end a running rollout now (promote or abort)."""
    method = f"{decision}_rollout"

    @post(
        f"/rollouts/{{rollout_id:str}}/{decision}",
        opt={"scope": SCOPES[method]},
        name=f"console-rollout-{decision}",
    )
    async def decide(request: Request[Any, Any, Any], rollout_id: FromPath[str]) -> Redirect:
        await checked_form(request)
        ending = PromoteRollout if decision == "promote" else AbortRollout
        await getattr(q.inference, method)(
            ending(id=rollout_id, reason=f"{outcome} in the console")
        )
        return done(f"/ui/rollouts/{rollout_id}", f"rollout {outcome}")

    return decide


def _policy(form: dict[str, str]) -> RolloutPolicy:
    """The policy the form describes (steps and interval; the rest as the defaults)."""
    defaults = RolloutPolicy()
    raw_steps = text(form, "steps", required=False)
    raw_interval = text(form, "interval_s", required=False)
    try:
        steps = [float(s) for s in raw_steps.replace(" ", "").split(",") if s] or defaults.steps
        interval = float(raw_interval) if raw_interval else defaults.interval_s
    except ValueError:
        raise InvalidInput(
            "steps must be percentages separated by commas and the interval a number of seconds"
        ) from None
    alias = text(form, "promote_alias", required=False) or None
    try:
        return msgspec.convert(
            {"steps": steps, "interval_s": interval, "promote_alias": alias}, RolloutPolicy
        )
    except msgspec.ValidationError as exc:
        raise InvalidInput(f"the rollout policy is not valid: {exc}") from None
