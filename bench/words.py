"""Text for the journey benchmark (J1): a ranked English vocabulary and made-up rare words.

No download and no data package: the vocabulary below is ranked roughly by how often the words
turn up in a mentoring conversation (function words first, then the everyday and the work
words), and ``Words`` draws from it with a Zipf law, so a few words are in most chats and most
words in few. Rare words (project code names, people's handles, library names nobody else
uses) are made from syllables; a small share of chats carry one, so a query for one finds a
handful of chats in a pair of 100,000.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence

# ranked: the most frequent first
FUNCTION = """
the i to you and a it that of is in we for this on be have so was but not with just what
can my do if think about your it's at like me would are they or there don't as one how know
that's i'm some get all an will yeah more when then out up really no from going time maybe
which also could well because by them good next right should did were been other into did
see something any want even now need very make much those only here where way why who
let's our us these things okay had great than sure still over two after first back same
try week say last new through before sounds idea yes little bit lot thing take give mean
""".split()

WORK = """
feedback team project manager review plan code design meeting goal work people interview
career question role skills learning docs deadline testing python data call notes draft
promotion growth priorities roadmap feature release customer users product engineering
senior junior lead staff mentor mentee conversation update progress problem solution
approach decision example options tradeoffs context support help advice practice book
talk presentation slides demo sprint ticket backlog estimate scope risk blocker pairing
onboarding architecture service database api deploy production incident postmortem alert
latency performance bug fix refactor tests coverage pipeline ci branch merge pull request
comments reviewer style naming function module library framework migration schema query
index cache queue worker thread async event message protocol client server browser mobile
frontend backend infrastructure cloud cost budget hiring candidate offer salary negotiation
compensation raise title level expectations impact visibility ownership delegation trust
conflict communication confidence imposter stress burnout balance weekend holiday vacation
energy focus habit routine calendar inbox email slack documentation writing reading course
certificate conference workshop portfolio resume linkedin network introduction referral
recruiter manager's director vp org reorg strategy vision mission quarter okr metrics
dashboard analysis experiment hypothesis result report summary outline chapter article
blog side career's switch transition path specialist generalist depth breadth domain
expertise craft quality speed correctness simplicity complexity debt legacy rewrite
prototype mvp launch rollout rollback flag config secrets security privacy compliance
accessibility design's mockup wireframe figma research interviews survey persona journey
story estimate velocity retro standup planning grooming kanban scrum agile waterfall
stakeholders alignment buy-in pushback disagreement escalation boundaries saying asking
listening questions curiosity patience kindness honesty courage clarity humility growth's
mindset failure mistake lesson win celebrate gratitude recognition praise criticism
constructive specific actionable timely follow-up check-in one-on-one sync async written
verbal tone language words phrasing framing storytelling audience executive technical
non-technical explain teach learn study practice exercise kata leetcode algorithms systems
distributed consistency availability partition replication sharding scaling load traffic
monitoring logging tracing observability sre oncall pager runbook automation scripts tools
editor terminal git vim emacs ide debugger profiler benchmark flame graph memory cpu disk
network socket websocket http json yaml sql postgres sqlite redis kafka kubernetes docker
terraform aws gcp azure linux macos windows rust go java typescript javascript react vue
""".split()

EVERYDAY = """
today tomorrow yesterday morning afternoon evening monday tuesday wednesday thursday friday
month year days hours minutes early late soon later already again always never often
sometimes usually probably definitely actually honestly basically exactly totally pretty
quite enough almost around between without during while until since though although
happy glad excited nervous worried tired busy stuck confused curious proud grateful calm
hard easy simple clear fuzzy vague big small long short quick slow better worse best worst
important useful helpful interesting boring fun tricky messy clean solid fine nice cool
family kids partner friend friends coffee lunch dinner walk run gym sleep music movie game
travel trip home office remote hybrid commute desk laptop phone screen camera microphone
""".split()

VOCABULARY: list[str] = list(dict.fromkeys([*FUNCTION, *WORK, *EVERYDAY]))

SYLLABLES = (
    "ka lo mi ren tor vex zu pa qui dra sel nor bri thu gal fen mor xi ost ule "
    "an ve ri sto kel um bax cor dio ep"
).split()

GOALS = (
    "Prepare for the {} interview",
    "Agree on a plan for the {} review",
    "Get unstuck on the {} design",
    "Practice the {} presentation",
    "Decide whether to take the {} role",
    "Work through feedback on the {} draft",
    "Plan the next quarter around {}",
    "Talk through the conflict about {}",
    "Write the {} proposal",
    "Sort out priorities: {} first",
)
ITEMS = (
    "Send the {t} draft to {n}",
    "Book a call with {n} about {t}",
    "Read the chapter on {t} and write notes",
    "Ask {n} for feedback on the {t} doc",
    "Write up the {t} decision",
    "Try the {t} exercise twice this week",
    "Update the resume with the {t} project",
    "Schedule the {t} demo",
)
NAMES = (
    "Ada Grace Alan Barbara Edsger Margaret Donald Frances Ken Radia Linus Hedy Tim Sophie "
    "Dennis Karen John Anita Guido Katherine Bjarne Shafi Leslie Jean Niklaus Mary Fernando "
    "Adele Vint Annie Yukihiro Evelyn Rasmus Lynn James Susan Brian Ellen Martin Joan"
).split()
MARK_KINDS = ("learning", "feedback", "decision", "question")


def rare_words(count: int, seed: int = 7) -> list[str]:
    """``count`` distinct made-up words of three or four syllables, in a fixed order."""
    rng = random.Random(seed)
    known = set(VOCABULARY)
    combos = [
        "".join(c)
        for n in (3, 4)
        for c in itertools.islice(itertools.product(SYLLABLES, repeat=n), 40_000)
    ]
    rng.shuffle(combos)
    out: list[str] = []
    for w in combos:
        if w not in known:
            out.append(w)
            known.add(w)
            if len(out) == count:
                break
    return out


class Words:
    """Sentences drawn from the ranked vocabulary with a Zipf law (exponent ``s``)."""

    def __init__(self, rng: random.Random, rare: Sequence[str], s: float = 1.05) -> None:
        self.rng = rng
        self.vocab = VOCABULARY
        total = 0.0
        self.cum: list[float] = []
        for rank in range(1, len(self.vocab) + 1):
            total += 1.0 / rank**s
            self.cum.append(total)
        self.total = total
        self.rare = list(rare)
        self.used_rare: dict[str, int] = {}  # rare words put in the text being recorded
        self.recording = False

    def words(self, n: int) -> list[str]:
        return self.rng.choices(self.vocab, cum_weights=self.cum, k=n)

    def word(self, lo: int = 0, hi: int | None = None) -> str:
        """One word of rank ``lo`` to ``hi`` (uniform)."""
        hi = len(self.vocab) if hi is None else min(hi, len(self.vocab))
        return self.vocab[self.rng.randrange(lo, hi)]

    def topic(self) -> str:
        """A content word (not a function word), common-ish."""
        return self.vocab[len(FUNCTION) + min(int(self.rng.expovariate(1 / 60)), len(WORK) - 1)]

    def rare_word(self) -> str:
        w = self.rare[self.rng.randrange(len(self.rare))]
        if self.recording:
            self.used_rare[w] = self.used_rare.get(w, 0) + 1
        return w

    def sentence(self, lo: int = 3, hi: int = 26, rare_share: float = 0.03) -> str:
        n = self.rng.randint(lo, hi)
        ws = self.words(n)
        if self.rng.random() < rare_share:
            ws[self.rng.randrange(n)] = self.rare_word()
        text = " ".join(ws)
        text = text[0].upper() + text[1:]
        end = self.rng.random()
        return text + ("?" if end < 0.2 else "." if end < 0.7 else "")

    def goal(self) -> str:
        return self.rng.choice(GOALS).format(self.topic())

    def item(self, names: Sequence[str]) -> str:
        return self.rng.choice(ITEMS).format(t=self.topic(), n=self.rng.choice(names))

    def notes(self, session_no: int, goal: str, items: Sequence[str]) -> str:
        lines = [f"# Session {session_no}", "", f"Goal: {goal}", ""]
        for _ in range(self.rng.randint(3, 8)):
            lines.append("- " + self.sentence(5, 14, rare_share=0.05))
        if items:
            lines.append("")
            lines += [f"- [ ] {t}" for t in items]
        return "\n".join(lines) + "\n"
