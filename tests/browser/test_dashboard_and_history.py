"""The dashboard draws its charts from real data; history shows rated experiments, escaped."""

from __future__ import annotations

import re
from typing import Any

from playwright.async_api import Page, expect

from gateway.flows import accounts
from gateway.flows.unit_of_work import UnitOfWorkFactory
from tests.browser.conftest import PASSWORD, TRAINER, Site, log_in, screenshot

CHART_DATA = """(id) => {
    const chart = Chart.getChart(document.getElementById(id));
    return chart ? {labels: chart.data.labels, datasets: chart.data.datasets.map((d) => d.data)}
                 : null;
}"""
PAINTED_PIXELS = """(id) => {
    const canvas = document.getElementById(id);
    const pixels = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
    let painted = 0;
    for (let i = 3; i < pixels.length; i += 4) if (pixels[i] > 0) painted += 1;
    return painted;
}"""
XSS = "<script>alert(1)</script>"


async def test_the_dashboard_draws_its_charts_from_the_rated_samples(
    page: Page, site: Site
) -> None:
    for a, b in [(2, 4), (3, 5), (4, 3)]:
        await site.rated_sample({"A": a, "B": b})
    async with site.client() as client:
        status: dict[str, Any] = (await client.get("/api/train/status")).json()
    await log_in(page, "/dashboard")
    await page.wait_for_selector("body[data-loaded]")
    await expect(page.get_by_test_id("sum-samples")).to_have_text("3")
    # reachable; "busy: N computation(s) queued" while its background refits wait for the GP
    await expect(page.get_by_test_id("sum-ml")).to_have_text(
        re.compile(r"^(reachable|busy: \d+ computation\(s\) queued)$")
    )

    curve = await page.evaluate(CHART_DATA, "curve-chart")
    assert curve["labels"] == [1, 2, 3]
    rating, rolling, best = curve["datasets"]
    assert rating == [p["avg_rating"] for p in status["learning_curve"]] == [3.0, 4.0, 3.5]
    assert rolling == [3.0, 3.5, 3.5]
    assert best == [p["best_so_far"] for p in status["learning_curve"]]
    apis = await page.evaluate(CHART_DATA, "api-chart")
    average, _predicted = apis["datasets"]
    assert average == [status["per_api"][a]["avg_rating"] for a in ("leonardo", "stable_diffusion")]
    assert average == [3.0, 4.0]
    for canvas in ("curve-chart", "api-chart"):
        assert await page.evaluate(PAINTED_PIXELS, canvas) > 1000, f"{canvas} is blank"

    # The ML service refits in the background, so importance can appear between two reads; it
    # never disappears. Read the status after the page: the page knows at most what it says.
    async with site.client() as client:
        later: dict[str, Any] = (await client.get("/api/train/status")).json()
    for api, figures in later["per_api"].items():
        importance = figures.get("importance") or {}
        empty = page.get_by_test_id(f"importance-empty-{api}")
        if importance and not await empty.count():
            drawn = await page.evaluate(CHART_DATA, f"importance-{api}")
            assert sorted(drawn["labels"]) == sorted(importance)
        else:
            await expect(empty).to_contain_text("Not enough data yet")
    lineage = page.get_by_test_id("lineage")
    await expect(lineage).to_contain_text("v1.0.0")
    await expect(lineage.locator(".badge.current")).to_have_text("current")

    assert status["reward_model"]["trained"] is False
    await expect(page.get_by_test_id("rm-trained")).to_have_text(
        "Not trained yet (it trains after phase 1)"
    )
    await expect(page.get_by_test_id("rm-empty")).to_have_text(
        "No active-learning samples yet: the reward model's predictions appear here once "
        "phase 2 shows candidates."
    )
    await expect(page.locator("#rm-error-chart")).to_be_hidden()
    await screenshot(page, "dashboard")


async def test_the_dashboard_charts_the_reward_models_prediction_errors(
    page: Page, site: Site
) -> None:
    ratings = [{"A": 2, "B": 4}, {"A": 5, "B": 3}]
    predictions = [{"A": 3.5, "B": 3.0}, {"A": 4.25, "B": 3.5}]
    ids = [(await site.rated_sample(r))["experiment_id"] for r in ratings]
    async with site.pool.acquire() as conn:
        for experiment_id, predicted in zip(ids, predictions, strict=True):
            # the two shown options, as phase 2 records them, and a candidate left unshown
            await conn.execute(
                """
                INSERT INTO experiment_candidates
                    (experiment_id, api, parameters, predicted_rating, shown_as)
                SELECT experiment_id, api, parameters,
                       CASE option WHEN 'A' THEN $2::float8 ELSE $3::float8 END, option
                FROM parameter_experiments WHERE experiment_id = $1
                UNION ALL
                SELECT experiment_id, api, parameters, 1.0, NULL
                FROM parameter_experiments WHERE experiment_id = $1 AND option = 'A'
                """,
                experiment_id,
                predicted["A"],
                predicted["B"],
            )
        samples = [
            await conn.fetchval("SELECT sample_number FROM experiments WHERE id = $1", i)
            for i in ids
        ]
    errors = [
        {"x": sample, "y": rated[o] - predicted[o]}
        for sample, rated, predicted in zip(samples, ratings, predictions, strict=True)
        for o in ("A", "B")
    ]
    assert [e["y"] for e in errors] == [-1.5, 1.0, 0.75, -0.5]
    async with site.client() as client:
        reward = (await client.get("/api/train/status")).json()["reward_model"]
    assert [(e["sample"], e["error"]) for e in reward["prediction_errors"]] == [
        (e["x"], e["y"]) for e in errors
    ]

    await log_in(page, "/dashboard")
    await page.wait_for_selector("body[data-loaded]")
    await expect(page.get_by_test_id("rm-trained")).to_have_text(
        "Not trained yet (it trains after phase 1)"
    )
    await expect(page.get_by_test_id("rm-empty")).to_be_hidden()
    await expect(page.locator("#rm-live-mae")).to_have_text("0.94")  # (1.5+1+0.75+0.5)/4
    drawn = await page.evaluate(
        """() => Chart.getChart(document.getElementById("rm-error-chart")).data.datasets
            .map((d) => ({label: d.label, points: d.data.map((p) => ({x: p.x, y: p.y}))}))"""
    )
    *per_api, rolling = drawn
    shown = sorted((p for d in per_api for p in d["points"]), key=lambda p: (p["x"], p["y"]))
    assert shown == sorted(errors, key=lambda p: (p["x"], p["y"]))
    assert rolling["label"].startswith("mean absolute error")
    assert rolling["points"] == [{"x": samples[0], "y": 1.25}, {"x": samples[1], "y": 0.9375}]
    assert await page.evaluate(PAINTED_PIXELS, "rm-error-chart") > 1000, "the chart is blank"
    await screenshot(page, "dashboard-reward-model")


async def test_history_shows_the_rated_experiment_with_its_comment_as_text(
    page: Page, site: Site
) -> None:
    body = await site.rated_sample({"A": 2, "B": 5}, comments=XSS, project_id="villa-7")
    await log_in(page, "/history")
    card = page.locator(f'article[data-experiment="{body["experiment_id"]}"]')
    await expect(card).to_be_visible()
    await expect(card.locator("blockquote.comment").first).to_have_text(XSS)
    await expect(card).to_contain_text(f"Rated by {TRAINER}")
    await expect(card).to_contain_text("project villa-7")
    await expect(card.locator('[data-option="A"]')).to_contain_text("2 / 5")
    await expect(card.locator('[data-option="B"]')).to_contain_text("5 / 5")
    await card.locator('[data-option="B"] summary').click()
    await expect(card.locator('[data-option="B"] .params-list')).to_contain_text("prompt_strength")
    await page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')]"
        ".every((i) => i.complete && i.naturalWidth > 0)"
    )
    assert await page.evaluate("() => document.querySelectorAll('#grid script').length") == 0
    await screenshot(page, "history")
    # the fixture's watch fails the test if alert(1) opened a dialog


async def test_history_pages_through_older_experiments(page: Page, site: Site) -> None:
    ids = [(await site.rated_sample({"A": 3, "B": 3}))["experiment_id"] for _ in range(13)]
    await log_in(page, "/history")
    cards = page.locator("article.experiment")
    await expect(cards).to_have_count(12)
    await expect(cards.first).to_have_attribute("data-experiment", ids[-1])
    await page.get_by_role("button", name="Load older experiments").click()
    await expect(cards).to_have_count(13)
    await expect(cards.last).to_have_attribute("data-experiment", ids[0])
    await expect(page.get_by_role("button", name="Load older experiments")).to_be_hidden()


async def test_history_filters_by_project_trainer_and_rating(page: Page, site: Site) -> None:
    _, other_token = await accounts.create_user(
        UnitOfWorkFactory(site.pool), "rhea", "trainer", password=PASSWORD
    )
    mine = await site.rated_sample({"A": 5, "B": 4}, project_id="villa-7")
    theirs = await site.rated_sample({"A": 1, "B": 2}, token=other_token, project_id="loft")
    await log_in(page, "/history")
    cards = page.locator("article.experiment")
    await expect(cards).to_have_count(2)

    async def filtered(**values: str) -> list[str | None]:
        """Fill the filter form (unnamed fields empty), submit it, return the cards shown."""
        for name in ("project_id", "trainer"):
            await page.locator(f'#filters [name="{name}"]').fill(values.get(name, ""))
        for name in ("min_rating", "max_rating"):
            await page.locator(f'#filters [name="{name}"]').select_option(values.get(name, ""))
        await page.get_by_role("button", name="Filter").click()
        await expect(page.get_by_test_id("history-grid")).to_have_attribute("aria-busy", "false")
        assert page.url.endswith("/history?" + "&".join(f"{k}={v}" for k, v in values.items()))
        return [await c.get_attribute("data-experiment") for c in await cards.all()]

    assert await filtered(project_id="loft") == [theirs["experiment_id"]]
    assert await filtered(trainer="rhea") == [theirs["experiment_id"]]
    assert await filtered(min_rating="4") == [mine["experiment_id"]]
    assert await filtered(max_rating="2") == [theirs["experiment_id"]]
    assert await filtered(trainer="nobody") == []
    await expect(page.locator("#summary")).to_have_text("No experiments match these filters.")
