"""The browser client in Debian's Chromium, driven by Playwright: two members, one real server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT, Pair, ServerProcess

CHROMIUM = os.environ.get("MENTEO_CHROMIUM", "/usr/bin/chromium")
ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    # A page fulfilled by Playwright (to add the CSP header, below) counts as public to Chromium,
    # which would then refuse its WebSocket to the loopback server.
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessChecks",
]
# Records every RTCPeerConnection the page makes, so a test can read its getStats().
TRACK_PEERS = """
(() => {
  const Native = window.RTCPeerConnection;
  window.__pcs = [];
  window.RTCPeerConnection = class extends Native {
    constructor(...args) { super(...args); window.__pcs.push(this); }
  };
})();
"""
# The policy the pages are served with (issue 10, item 5). Every browser test runs under it (the
# header is added to each page here too, so the client is held to it whatever the server sends),
# and the room fixture checks that nothing on the page was blocked.
CSP = (
    "default-src 'self'; connect-src 'self'; frame-ancestors 'none'; object-src 'none'; "
    "base-uri 'none'"
)
WATCH_CSP = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', (e) => {
  window.__csp.push(`${e.violatedDirective} ${e.blockedURI} ${e.sourceFile}:${e.lineNumber}`);
});
"""
SHOTS = ROOT / "docs" / "screenshots"
BUNDLE = ROOT / "static" / "dist"

if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
    if os.environ.get("CI") == "true":
        pytest.fail(f"Chromium is required in CI but {CHROMIUM} is missing", pytrace=False)
    pytest.skip(
        f"Chromium not found at {CHROMIUM} (apt-get install chromium)", allow_module_level=True
    )
if not BUNDLE.exists():
    if os.environ.get("CI") == "true":
        pytest.fail("static/dist is missing: the Makefile builds it", pytrace=False)
    pytest.skip("static/dist is missing: run `make` to build the client", allow_module_level=True)

from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect  # noqa: E402

expect.set_options(timeout=15_000)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        yield b
        await b.close()


class Member:
    def __init__(self, context: BrowserContext, page: Page, url: str) -> None:
        self.context = context
        self.page = page
        self.url = url
        self.errors: list[str] = []
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def tid(self, name: str) -> Any:
        return self.page.get_by_test_id(name)

    async def live(self) -> None:
        await expect(self.tid("connection-state")).to_have_attribute("data-state", "live")

    async def say(self, text: str) -> None:
        await self.tid("chat-input").fill(text)
        await self.tid("chat-input").press("Enter")


async def enforce_csp(context: BrowserContext) -> None:
    """Serve every page of this context with the Content-Security-Policy; record violations."""

    async def add_header(route: Any) -> None:
        if route.request.resource_type != "document":
            await route.continue_()
            return
        response = await route.fetch()
        headers = {**response.headers, "content-security-policy": CSP}
        await route.fulfill(response=response, headers=headers)

    await context.route("**/*", add_header)
    await context.add_init_script(WATCH_CSP)


async def csp_violations(page: Page) -> list[str]:
    return list(await page.evaluate("window.__csp || []"))


async def open_member(browser: Browser, server: ServerProcess, pair_id: str, token: str) -> Member:
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    await enforce_csp(context)
    await context.add_init_script(TRACK_PEERS)
    await context.grant_permissions(["camera", "microphone"], origin=server.http)
    page = await context.new_page()
    url = f"{server.http}/rooms/{pair_id}#token={token}"
    await page.goto(url)
    member = Member(context, page, url)
    await member.live()
    return member


@pytest.fixture
async def room(
    browser: Browser, server: ServerProcess
) -> AsyncIterator[tuple[Pair, Member, Member]]:
    pair = server.pair("Ada Mentor", "Grace Mentee")
    mentor = await open_member(browser, server, pair.id, pair.mentor_token)
    mentee = await open_member(browser, server, pair.id, pair.mentee_token)
    yield pair, mentor, mentee
    assert not mentor.errors, mentor.errors
    assert not mentee.errors, mentee.errors
    for m in (mentor, mentee):
        if not m.page.is_closed():
            assert await csp_violations(m.page) == [], m.page.url
    await mentor.context.close()
    await mentee.context.close()


def messages(m: Member, text: str) -> Any:
    return m.tid("chat-log").get_by_test_id("chat-message").filter(has_text=text)


async def test_chat_both_ways_with_delivery_marks(room: tuple[Pair, Member, Member]) -> None:
    _, mentor, mentee = room
    await expect(mentor.tid("peer-presence")).to_have_attribute("data-state", "online")
    await expect(mentee.tid("peer-presence")).to_have_attribute("data-state", "online")
    await mentor.say("Hello Grace, how was the week?")
    mine = messages(mentor, "Hello Grace, how was the week?")
    await expect(mine).to_have_attribute("data-status", "delivered")
    seq = await mine.get_attribute("data-seq")
    assert seq is not None and int(seq) > 0
    theirs = messages(mentee, "Hello Grace, how was the week?")
    await expect(theirs).to_have_count(1)
    await mentee.say("Busy but good!")
    await expect(messages(mentee, "Busy but good!")).to_have_attribute("data-status", "delivered")
    await expect(messages(mentor, "Busy but good!")).to_have_count(1)
    seq_a = await messages(mentor, "Busy but good!").get_attribute("data-seq")
    seq_b = await messages(mentee, "Busy but good!").get_attribute("data-seq")
    assert seq_a == seq_b and seq_a is not None


async def test_typing_indicator(room: tuple[Pair, Member, Member]) -> None:
    _, mentor, mentee = room
    await expect(mentee.tid("typing-indicator")).to_be_hidden()
    await mentor.tid("chat-input").press_sequentially("I am typ", delay=30)
    await expect(mentee.tid("typing-indicator")).to_be_visible()
    await mentor.tid("chat-input").press("Enter")
    await expect(mentee.tid("typing-indicator")).to_be_hidden()


async def test_notes_typed_at_once_converge(room: tuple[Pair, Member, Member]) -> None:
    _, mentor, mentee = room
    a, b = mentor.tid("notes-editor"), mentee.tid("notes-editor")
    await a.click()
    await b.click()
    await a.press_sequentially("Goals: ship the thesis. ", delay=15)
    await expect(mentee.tid("notes-editor")).to_contain_text("Goals: ship the thesis.")
    # both type at the same time
    await asyncio.gather(
        a.press_sequentially("Mentor writes here. ", delay=20),
        b.press_sequentially("Mentee adds café ☕. ", delay=20),
    )
    for m in (mentor, mentee):
        await expect(m.tid("notes-editor")).to_contain_text("Mentor writes here.")
        await expect(m.tid("notes-editor")).to_contain_text("Mentee adds café ☕.")
    # the last keystroke may still be on its way: wait (bounded) until both show the same text
    for _ in range(50):
        if await a.inner_text() == await b.inner_text():
            break
        await mentor.page.wait_for_timeout(100)
    assert await a.inner_text() == await b.inner_text()


async def frames_decoded(m: Member) -> int:
    return int(
        await m.page.evaluate(
            """async () => {
                const pcs = (window.__pcs || []).filter(pc => pc.connectionState !== 'closed');
                if (!pcs.length) return 0;
                let n = 0;
                (await pcs[pcs.length - 1].getStats()).forEach(r => {
                    if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0;
                });
                return n;
            }"""
        )
    )


async def wait_video(m: Member) -> None:
    for _ in range(150):
        if await frames_decoded(m) > 0:
            return
        await m.page.wait_for_timeout(200)
    raise AssertionError("no video frames decoded")


async def test_call_both_sides_decode_video(room: tuple[Pair, Member, Member]) -> None:
    _, mentor, mentee = room
    await mentor.say("Welcome back! Shall we go through your goals?")
    await mentee.say("Yes, I brought the draft of chapter 3.")
    await expect(messages(mentor, "I brought the draft")).to_have_count(1)
    await mentor.tid("notes-editor").click()
    await mentor.tid("notes-editor").press_sequentially(
        "## Goals\n- Finish chapter 3 by Friday\n- Book a practice talk\n"
    )
    await expect(mentee.tid("notes-editor")).to_contain_text("Book a practice talk")
    await mentor.tid("start-call").click()
    await wait_video(mentor)
    await wait_video(mentee)
    await mentor.page.screenshot(path=str(SHOTS / "room.png"))
    await mentor.tid("hang-up").click()


async def test_reload_shows_history_once_and_call_returns(
    room: tuple[Pair, Member, Member],
) -> None:
    _, mentor, mentee = room
    for i in range(3):
        await mentor.say(f"before reload {i}")
        await expect(messages(mentor, f"before reload {i}")).to_have_attribute(
            "data-status", "delivered"
        )
    await mentee.tid("start-call").click()
    await wait_video(mentor)
    await wait_video(mentee)
    await mentee.page.reload()
    await mentee.live()
    for i in range(3):
        await expect(messages(mentee, f"before reload {i}")).to_have_count(1)
    await wait_video(mentee)
    await wait_video(mentor)
    await mentee.say("back after reload")
    await expect(messages(mentor, "back after reload")).to_have_count(1)


async def test_offline_chat_is_delivered_exactly_once(room: tuple[Pair, Member, Member]) -> None:
    _, mentor, mentee = room
    await mentee.context.set_offline(True)
    await expect(mentee.tid("connection-state")).to_have_attribute("data-state", "reconnecting")
    await mentee.say("sent while offline")
    await expect(messages(mentee, "sent while offline")).to_have_attribute("data-status", "sending")
    await mentee.context.set_offline(False)
    await mentee.live()
    await expect(messages(mentee, "sent while offline")).to_have_attribute(
        "data-status", "delivered"
    )
    await expect(messages(mentor, "sent while offline")).to_have_count(1)
    await expect(messages(mentee, "sent while offline")).to_have_count(1)


async def test_end_session_and_review(
    room: tuple[Pair, Member, Member], server: ServerProcess, browser: Browser
) -> None:
    pair, mentor, mentee = room
    await mentor.say("Our plan: read chapter 3")
    await expect(messages(mentee, "Our plan: read chapter 3")).to_have_count(1)
    await mentee.tid("notes-editor").click()
    await mentee.tid("notes-editor").press_sequentially("## Next steps\n- Read chapter 3\n")
    await expect(mentor.tid("notes-editor")).to_contain_text("Read chapter 3")
    await mentee.tid("end-session").click()
    await mentee.tid("confirm-end").click()
    for m in (mentor, mentee):
        await expect(m.tid("connection-state")).to_have_attribute("data-state", "ended")

    page = mentor.page
    await page.goto(f"{server.http}/rooms/{pair.id}/sessions#token={pair.mentor_token}")
    await expect(page.get_by_test_id("session-list")).to_be_visible()
    item = page.get_by_test_id("session-item").first
    await expect(item).to_be_visible()
    await item.click()
    await expect(page.get_by_test_id("transcript-event").filter(has_text="Our plan")).to_have_count(
        1
    )
    await expect(page.get_by_test_id("transcript-notes")).to_contain_text("Read chapter 3")
    await page.screenshot(path=str(SHOTS / "review.png"), full_page=True)
    async with page.expect_download() as info:
        await page.get_by_test_id("download-markdown").click()
    download = await info.value
    text = Path(await download.path()).read_text()  # noqa: ASYNC240 (a small local file)
    assert "Our plan: read chapter 3" in text


# ---- contract v1.1: the mentorship journey -------------------------------------------------------


def in_item_list(m: Member, text: str) -> Any:
    return m.tid("item-list").get_by_test_id("item").filter(has_text=text)


async def end_and_start_again(pair: Pair, mentor: Member, mentee: Member) -> None:
    """The mentee ends the session; both start the next one from the ended banner."""
    await mentee.tid("end-session").click()
    await mentee.tid("confirm-end").click()
    for m in (mentor, mentee):
        await expect(m.tid("connection-state")).to_have_attribute("data-state", "ended")
    for m in (mentor, mentee):
        await m.page.locator("#new-session").click()
        await m.live()


async def search_for(page: Page, q: str, expect_results: bool) -> Any:
    """Search from the sessions page; the index may trail the writes a little, so a search
    that must find something is asked again (bounded) until it does."""
    results = page.get_by_test_id("search-result")
    # the page's script binds the search form, then enables it, as it gets ready
    await expect(page.locator("body")).to_have_attribute("data-state", "ready")
    await expect(page.get_by_test_id("search-input")).to_be_enabled()
    for _ in range(20):
        await page.evaluate("document.body.dataset.search = 'asked'")
        await page.get_by_test_id("search-input").fill(q)
        await page.get_by_test_id("search-input").press("Enter")
        await expect(page.locator("body")).to_have_attribute("data-search", "done")
        if not expect_results or await results.count():
            break
        await page.wait_for_timeout(250)
    return results


async def session_id_of(m: Member) -> str:
    sid = await m.page.evaluate("window.menteo.client.sessionId")
    assert isinstance(sid, str) and sid
    return sid


async def test_goal_item_mark_carried_to_next_session_search_and_journey(
    room: tuple[Pair, Member, Member], server: ServerProcess
) -> None:
    pair, mentor, mentee = room
    first = await session_id_of(mentor)

    # the goal: set by one, shown to both
    await mentor.tid("session-goal").click()
    await mentor.tid("goal-input").fill("Finish chapter three")
    await mentor.tid("goal-input").press("Enter")
    for m in (mentor, mentee):
        await expect(m.tid("session-goal")).to_have_text("Finish chapter three")

    # an action item with an owner and a due date
    await mentee.tid("item-text").fill("Send the draft to Ada")
    await mentee.tid("item-owner").select_option(pair.mentee)
    await mentee.tid("item-due").fill("2030-01-15")
    await mentee.tid("item-add").click()
    for m in (mentor, mentee):
        item = in_item_list(m, "Send the draft to Ada")
        await expect(item).to_have_count(1)
        await expect(item).to_have_attribute("data-state", "open")
        await expect(item).to_have_attribute("data-item-id", re.compile(r".+"))

    # a task line of the notes becomes an item with one click
    await mentor.tid("notes-editor").click()
    await mentor.tid("notes-editor").press_sequentially("- [ ] Book a practice talk @Grace")
    await mentor.tid("notes-to-item").click()
    booked = in_item_list(mentee, "Book a practice talk")
    await expect(booked).to_have_count(1)
    await expect(booked.get_by_test_id("item-set-owner")).to_have_value(pair.mentee)
    await expect(mentor.tid("notes-to-item")).to_be_disabled()

    # a key moment from a chat message
    await mentor.say("Your intro is too long: cut it to one page")
    msg = messages(mentee, "Your intro is too long")
    await expect(msg).to_have_attribute("data-seq", re.compile(r"\d+"))
    await msg.get_by_test_id("mark-button").click()
    await mentee.page.get_by_role("button", name="feedback", exact=True).click()
    for m in (mentor, mentee):
        mark = m.tid("mark").filter(has_text="Your intro is too long")
        await expect(mark).to_have_count(1)
        await expect(mark).to_have_attribute("data-kind", "feedback")
        await expect(mark).to_have_attribute("data-pending", "false")

    # the next session: the item is "since last time", and ticked off there it stays listed
    await end_and_start_again(pair, mentor, mentee)
    second = await session_id_of(mentee)
    assert second != first
    for m in (mentor, mentee):
        await expect(m.tid("session-goal")).to_have_text("")
        since = (
            m.page.locator("#items-since")
            .get_by_test_id("item")
            .filter(has_text="Send the draft to Ada")
        )
        await expect(since).to_have_count(1)
        await expect(m.page.locator("#since-title")).to_be_visible()
    carried = in_item_list(mentee, "Send the draft to Ada")
    await carried.get_by_test_id("item-toggle").click()
    for m in (mentor, mentee):
        await expect(in_item_list(m, "Send the draft to Ada")).to_have_attribute(
            "data-state", "done"
        )
        await expect(in_item_list(m, "Send the draft to Ada")).to_have_attribute(
            "data-pending", "false"
        )

    # a reload in the same session: the item ticked off is still listed, with its text
    await mentee.page.reload()
    await mentee.live()
    await expect(in_item_list(mentee, "Send the draft to Ada")).to_have_attribute(
        "data-state", "done"
    )

    # search lands on the right session, at that moment
    page = mentor.page
    await page.goto(f"{server.http}/rooms/{pair.id}/sessions#token={pair.mentor_token}")
    results = await search_for(page, "intro", expect_results=True)
    hit = results.filter(has_text="too long").first
    await expect(hit).to_have_attribute("data-session-id", first)
    await hit.click()
    await expect(page).to_have_url(re.compile(f"/sessions/{first}"))
    await expect(page.locator("[data-highlight=true]")).to_contain_text("too long")
    await expect(page.locator("#summary-goal")).to_contain_text("Finish chapter three")

    # the journey page, and its Markdown
    await page.goto(f"{server.http}/rooms/{pair.id}/sessions#token={pair.mentor_token}")
    await page.get_by_test_id("journey-link").click()
    await expect(page).to_have_url(re.compile(f"/rooms/{pair.id}/journey"))
    await expect(page.get_by_test_id("journey-session")).to_have_count(2)
    await expect(page.get_by_test_id("journey-session").first).to_contain_text(
        "Finish chapter three"
    )
    await expect(page.get_by_test_id("journey-mark")).to_have_attribute("data-kind", "feedback")
    journey_item = page.get_by_test_id("journey-item").filter(has_text="Send the draft to Ada")
    await expect(journey_item).to_have_attribute("data-state", "done")
    await page.screenshot(path=str(SHOTS / "journey.png"), full_page=True)
    async with page.expect_download() as info:
        await page.get_by_test_id("download-journey").click()
    download = await info.value
    text = Path(await download.path()).read_text()  # noqa: ASYNC240 (a small local file)
    assert "Send the draft to Ada" in text and "Finish chapter three" in text


async def test_off_the_record_by_consent_and_absent_from_review(
    room: tuple[Pair, Member, Member], server: ServerProcess
) -> None:
    pair, mentor, mentee = room
    await mentor.say("Before we pause the record")
    await expect(messages(mentee, "Before we pause the record")).to_have_count(1)

    # the mentee asks; only the mentor may agree
    await mentee.tid("record-toggle").click()
    for m in (mentor, mentee):
        await expect(m.tid("record-toggle")).to_have_attribute("data-state", "requested")
        await expect(m.tid("record-banner")).to_be_visible()
    await expect(mentee.tid("record-banner")).to_contain_text("Waiting for Ada Mentor")
    await expect(mentee.tid("record-accept")).to_be_hidden()
    await expect(mentor.tid("record-banner")).to_contain_text("Grace Mentee asks")
    await expect(mentor.tid("record-banner")).to_contain_text("not kept")
    await mentor.tid("record-accept").click()
    for m in (mentor, mentee):
        await expect(m.tid("record-toggle")).to_have_attribute("data-state", "off")
        await expect(m.tid("record-banner")).to_contain_text("asked by")
        await expect(m.tid("record-banner")).to_contain_text("notes are still saved")

    # said off the record: relayed, marked as such, acked without a seq
    await mentee.say("Something about my manager, quietly")
    own = messages(mentee, "my manager, quietly")
    await expect(own).to_have_attribute("data-off", "true")
    await expect(own).to_have_attribute("data-status", "delivered")
    assert await own.get_attribute("data-seq") is None
    theirs = messages(mentor, "my manager, quietly")
    await expect(theirs).to_have_count(1)
    await expect(theirs).to_have_attribute("data-off", "true")
    await expect(theirs.get_by_test_id("mark-button")).to_have_count(0)
    assert await mentee.page.evaluate("window.menteo.client.unacked.size") == 0
    await mentor.page.screenshot(path=str(SHOTS / "off-the-record.png"))

    # either one turns recording back on
    await mentor.tid("record-toggle").click()
    for m in (mentor, mentee):
        await expect(m.tid("record-toggle")).to_have_attribute("data-state", "on")
        await expect(m.tid("record-banner")).to_be_hidden()
    await mentee.say("Back on the record now")
    back = messages(mentor, "Back on the record now")
    await expect(back).to_have_attribute("data-seq", re.compile(r"\d+"))
    sid = await session_id_of(mentor)

    # the review page: the stretch as one line, nothing said in it
    page = mentor.page
    await page.goto(f"{server.http}/sessions/{sid}#token={pair.mentor_token}")
    events = page.get_by_test_id("transcript-event")
    await expect(events.filter(has_text="Back on the record now")).to_have_count(1)
    await expect(events.filter(has_text="Before we pause the record")).to_have_count(1)
    await expect(events.filter(has_text="my manager")).to_have_count(0)
    stretch = page.locator('[data-kind="off-record"]')
    await expect(stretch).to_have_count(1)
    await expect(stretch).to_contain_text("asked by Grace Mentee, agreed by Ada Mentor")
    # and search does not find it, while it finds what was said after (the barrier)
    await page.goto(f"{server.http}/rooms/{pair.id}/sessions#token={pair.mentor_token}")
    await search_for(page, "Back", expect_results=True)
    results = await search_for(page, "manager", expect_results=False)
    await expect(results).to_have_count(0)


# ---- hardening (issue 10): the token leaves the URL, a safe notes renderer, no inline code ------


def no_token(url: str) -> bool:
    return "token" not in url


async def test_token_leaves_the_address_bar_and_reload_still_joins(
    room: tuple[Pair, Member, Member], server: ServerProcess
) -> None:
    pair, mentor, mentee = room
    for m in (mentor, mentee):
        assert no_token(m.page.url), m.page.url
        assert no_token(await m.page.evaluate("location.href"))
        # The page still works under the policy: CodeMirror's styles (adopted, not inline) apply.
        white_space = await m.tid("notes-editor").evaluate("(e) => getComputedStyle(e).whiteSpace")
        assert white_space != "normal", white_space
        await expect(m.page.locator("#bundle-missing")).to_have_count(0)
    await mentee.page.reload()
    await mentee.live()
    assert no_token(mentee.page.url)
    await mentee.say("back without a token in the URL")
    await expect(messages(mentor, "back without a token in the URL")).to_have_count(1)
    await expect(messages(mentee, "back without a token in the URL")).to_have_attribute(
        "data-status", "delivered"
    )

    # The review pages: opened from the room's link (the token rides in its fragment), each
    # strips it, and each still loads after a reload.
    page = mentee.page
    review = await page.locator("#review-link").get_attribute("href")
    assert review and "#token=" in review
    await page.goto(f"{server.http}{review}")
    await expect(page.get_by_test_id("session-item").first).to_be_visible()
    assert no_token(page.url), page.url
    await page.reload()
    await expect(page.get_by_test_id("session-item").first).to_be_visible()
    journey = await page.get_by_test_id("journey-link").get_attribute("href")
    await page.get_by_test_id("session-item").first.click()
    await expect(
        page.get_by_test_id("transcript-event").filter(has_text="back without a token")
    ).to_have_count(1)
    assert no_token(page.url), page.url
    await page.reload()
    await expect(
        page.get_by_test_id("transcript-event").filter(has_text="back without a token")
    ).to_have_count(1)
    assert journey and "#token=" in journey
    await page.goto(f"{server.http}{journey}")
    await expect(page.locator("body")).to_have_attribute("data-state", "ready")
    assert no_token(page.url), page.url
    await page.reload()
    await expect(page.locator("body")).to_have_attribute("data-state", "ready")
    # Back to the room without a token in the URL: this tab kept it.
    await page.goto(f"{server.http}/rooms/{pair.id}")
    await mentee.live()
    assert await csp_violations(page) == []


PATHOLOGICAL_NOTES = "\n".join(
    [
        "`" * 8000 + "a",
        "*" * 4000 + "b",
        "_" * 4000 + "c",
        "[" * 4000 + "d",
        "](" * 4000 + "e",
        "<img src=x onerror=alert(1)> [x](javascript:alert(1))",
        "the end of the pathological notes",
    ]
)


async def test_pathological_notes_line_keeps_the_review_page_quick(
    room: tuple[Pair, Member, Member], server: ServerProcess
) -> None:
    pair, mentor, mentee = room
    await mentor.page.evaluate(
        "(text) => window.menteo.notes.view.dispatch({changes: {from: 0, insert: text}})",
        PATHOLOGICAL_NOTES,
    )
    # The editor draws only what is in view: ask the shared document itself.
    await mentee.page.wait_for_function(
        "(t) => window.menteo.notes.ytext.toString().includes(t)",
        arg="the end of the pathological notes",
    )
    sid = await session_id_of(mentor)
    await mentor.tid("end-session").click()
    await mentor.tid("confirm-end").click()
    await expect(mentor.tid("connection-state")).to_have_attribute("data-state", "ended")

    page = mentor.page
    started = time.monotonic()
    await page.goto(f"{server.http}/sessions/{sid}#token={pair.mentor_token}")
    notes = page.get_by_test_id("transcript-notes")
    await expect(notes).to_contain_text("the end of the pathological notes", timeout=5_000)
    await expect(page.locator("body")).to_have_attribute("data-state", "ready")
    took = time.monotonic() - started
    assert took < 5, f"the review page took {took:.1f} s"
    # Nothing of it became markup: no image, no javascript: link.
    assert await notes.locator("img").count() == 0
    assert await notes.locator("a[href^='javascript']").count() == 0
    await expect(notes).to_contain_text("<img src=x onerror=alert(1)>")
    # The page is not stuck: it still answers quickly.
    start = await page.evaluate("performance.now()")
    end = await page.evaluate("performance.now()")
    assert end - start < 1_000


async def test_bundle_missing_banner_without_inline_script(
    browser: Browser, server: ServerProcess
) -> None:
    pair = server.pair("Ada Mentor", "Grace Mentee")
    context = await browser.new_context()
    await enforce_csp(context)
    await context.route("**/static/dist/review.js", lambda route: route.fulfill(status=404))
    page = await context.new_page()
    await page.goto(f"{server.http}/rooms/{pair.id}/sessions#token={pair.mentor_token}")
    await expect(page.locator("#bundle-missing")).to_be_visible()
    # without the script the search form stays disabled: an Enter cannot reload the page
    await expect(page.get_by_test_id("search-input")).to_be_disabled()
    assert await csp_violations(page) == []
    await context.close()
