"""How long a poll cycle takes, for monitor and for rss2email on the same feeds.

Serves N generated news feeds (RSS 2.0, M items each, shaped and sized like the publisher feeds
in ../shared/corpus: ~2 KB per item, categories, media:, dc:creator, some content:encoded; gzip
when asked for it; ETag and Last-Modified with 304 answers) from a local asyncio HTTP server in
a process of its own, then times, for each reader:

    1. a first full cycle (every feed new),
    2. a cycle with nothing changed (every answer a 304),
    3. a cycle with 10% of the feeds changed (a few new items each),

and prints the times, the ratios, the peak memory (RSS) of the process that ran the cycles
and its workers, and the CPU time each cycle took in the daemon's process and in its workers.

monitor runs the way the daemon does: one long-lived process (`App.start()`, then, per cycle,
every source made due and `App.poll_due()`, which leases due sources in batches as the daemon's
poll tick does, its worker process fetching and reading) with a temporary SQLite database and
a rules directory holding the N feeds and the shipped rules/entities.yaml and
rules/watchlist.yaml. Settings are the defaults unless given (--set, which also passes any
other environment variable; MONITOR_FETCH_CONCURRENCY=8, log level INFO; the log goes to a
file), except the per-host limit, lifted: the one local server stands in for N publishers.
Memory is the daemon's and its fetch worker's together. rss2email runs the way it is used,
`r2e run --no-send` once per cycle, from /tmp/r2e-venv (installed with pip if missing) or
--r2e.

    python bench/poll.py [--feeds 1000] [--items 50] [--changed 0.1] [--new-items 3]
                         [--skip-peer] [--r2e PATH] [--concurrency N] [--no-gzip]
                         [--latency SECONDS]
                         [--profile DIR] [--keep] [--set NAME=VALUE ...]

--latency SECONDS makes the server wait that long before each answer, as a publisher's server
does on the internet (time to first byte): a local server answers at once, which measures the
readers' own work alone (the issue's targets are for that, without --latency). rss2email fetches
one feed after another, monitor several at a time.

--profile DIR samples monitor's process and its fetch workers with py-spy (from
/tmp/pyspy-venv, installed if missing) during each cycle and prints where the time goes (every
thread of every process), with the raw stacks written to DIR.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gzip
import html
import itertools
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from xml.sax.saxutils import escape, quoteattr

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
R2E_VENV = Path("/tmp/r2e-venv")
PYSPY_VENV = Path("/tmp/pyspy-venv")

TARGETS = {"unchanged_s": 1.5, "unchanged_ratio": 2.0, "full_ratio": 5.0, "rss_mb": 250}


# Feeds ----------------------------------------------------------------------------------------
# Text is drawn word by word from the vocabulary of the corpus's English and Spanish publisher
# feeds, at the words' own frequencies: items read as nonsense but share words the way news
# does (so story grouping and matching see realistic overlap), and no two items are alike.
# Some feeds are Chinese (drawn from a small pool), and about 2% of items are about the watch
# list, so the rules match and alerts are written.

VOCABULARY = {"en": ["nytimes.xml", "cnn.xml", "bbc.xml"],
              "es": ["elpais.xml", "elpais-2019.xml", "eldiario.xml", "elmundo.xml",
                     "laopinion.xml", "expansion.xml", "europapress.xml"]}
WATCH = {
    "en": ["COSCO Shipping expands services at the Chancay megaport",
           "US Southern Command chief visits Lima as Chinese port opens",
           "Peru and China update their free trade agreement",
           "First container ship leaves the Chancay Port Terminal for Shanghai"],
    "es": ["Cosco Shipping amplía operaciones en el megapuerto de Chancay",
           "El jefe del Comando Sur de Estados Unidos visita Lima",
           "Perú y China actualizan el tratado de libre comercio",
           "Zarpa el primer buque portacontenedores del puerto de Chancay hacia Shanghái"],
    "zh": ["中远海运扩大钱凯港航线", "秘鲁与中国升级自由贸易协定", "钱凯港首艘集装箱船启航"],
}
SECTIONS = {"en": ["World", "Americas", "Business", "Economy", "Politics", "Markets", "Energy"],
            "es": ["Mundo", "Economía", "Política", "Mercados", "Energía", "Internacional"],
            "zh": ["国际", "经济", "政治", "市场", "能源", "贸易"]}
ZH_PHRASES = ["秘鲁央行", "国会", "总统", "港口工人", "监管机构", "财政部", "航运公司", "农民",
              "投资者", "法院", "反对党", "卫生部", "矿业公司", "警方", "工会", "警告", "批准",
              "拒绝", "宣布", "推迟", "呼吁", "支持", "调查", "扩大", "削减", "新关税",
              "预算改革", "铜出口创纪录", "养老金改革", "港口扩建", "降息", "限水措施",
              "沿海铁路", "紧急资金", "燃油补贴", "新机场", "渔业配额", "在利马", "在北京",
              "在上海", "在华盛顿", "周一", "本周", "谈判后", "投票前", "分析人士认为",
              "此举可能影响明年的经济增长", "该措施仍需国会批准", "官员没有说明计划何时生效"]
AUTHORS = ["Ana Torres", "John Miller", "María Fernández", "Wei Zhang", "Lucía Quispe",
           "David Brown", "Carlos Mendoza", "Sarah Johnson", "Jorge Huamán", "Li Na",
           "Elena Rojas", "Tom Walker", "Rosa Chávez", "Pablo Vargas", "Emma Wilson"]
WORD = re.compile(r"[^\W\d_]+(?:['’][^\W\d_]+)?")


def vocabulary(corpus: Path) -> dict[str, tuple[list[str], list[int]]]:
    """Per language, the words of the corpus feeds' titles and descriptions and their
    cumulative counts (for random.choices)."""
    found = {}
    for lang, files in VOCABULARY.items():
        counts: collections.Counter[str] = collections.Counter()
        for name in files:
            text = (corpus / "chrome-extension-mocks" / name).read_text(encoding="utf-8",
                                                                         errors="replace")
            for match in re.finditer(r"<(title|description)>(.*?)</\1>", text, re.S):
                value = match.group(2).replace("<![CDATA[", "").replace("]]>", "")
                value = html.unescape(re.sub(r"<[^>]+>", " ", html.unescape(value)))
                # Some saved feeds were double-encoded (UTF-8 read as Latin-1): skip the
                # mangled words.
                counts.update(w.lower() for w in WORD.findall(value)
                              if not re.search("[ãâÃÂ]", w))
        words = sorted(counts)
        found[lang] = (words, list(itertools.accumulate(counts[w] for w in words)))
    found["zh"] = (ZH_PHRASES, list(range(1, len(ZH_PHRASES) + 1)))
    return found


def language(feed: int) -> str:
    if feed % 20 == 7:
        return "zh"
    return "es" if feed % 3 == 1 else "en"


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:70] or "nota"


@dataclass(frozen=True)
class Corpus:
    items: int  # per feed
    new_per_change: int
    epoch: datetime  # the newest item of an unchanged feed is a little older than this
    words: dict[str, tuple[list[str], list[int]]]

    def text(self, rng: random.Random, lang: str, low: int, high: int) -> str:
        words, weights = self.words[lang]
        drawn = rng.choices(words, cum_weights=weights, k=rng.randint(low, high))
        if lang == "zh":
            return "".join(drawn) + "。"
        # A few capitalised words, as names are.
        drawn = [w.capitalize() if rng.random() < 0.12 else w for w in drawn]
        return " ".join(drawn).capitalize()

    def item(self, feed: int, seq: int) -> str:
        """Item `seq` of a feed, the same every time it is asked for."""
        rng = random.Random(feed * 1_000_003 + seq)
        lang = language(feed)
        watched = rng.random() < 0.02
        title = rng.choice(WATCH[lang]) if watched else self.text(rng, lang, 7, 13)
        sentences = [self.text(rng, lang, 12, 28) for _ in range(rng.randint(2, 3))]
        if watched:
            sentences.insert(0, rng.choice(WATCH[lang]))
        description = (" " if lang != "zh" else "").join(
            s if lang == "zh" else s + "." for s in sentences)
        # Newest first; a change adds `new_per_change` items newer than the epoch.
        published = self.epoch + timedelta(minutes=(seq - self.items) * rng.randint(25, 55))
        host = f"news{feed}.example"
        section = SECTIONS[lang][seq % len(SECTIONS[lang])]
        path = f"/{published:%Y/%m/%d}/{slug(section)}/{slug(title)}-{feed}-{seq}.html"
        categories = "".join(
            f'<category domain="https://{host}/keywords">{escape(self.text(rng, lang, 1, 3))}'
            "</category>" for _ in range(rng.randint(3, 6)))
        parts = [
            f"<title>{escape(title)}</title>",
            f"<link>https://{host}{path}?utm_source=rss&amp;utm_medium=feed</link>",
            f'<guid isPermaLink="true">https://{host}{path}</guid>',
            f"<description>{escape(description)}</description>",
            f"<dc:creator>{escape(rng.choice(AUTHORS))}</dc:creator>",
            f"<pubDate>{format_datetime(published)}</pubDate>",
            categories,
            f'<media:content height="400" medium="image" width="600" '
            f'url="https://static.{host}/images/{published:%Y/%m/%d}/{seq}-'
            f'{rng.getrandbits(32):x}-articleLarge.jpg"/>',
            f"<media:credit>{escape(rng.choice(AUTHORS))}/Agencia</media:credit>",
            f"<media:description>{escape(self.text(rng, lang, 8, 16))}</media:description>",
        ]
        if feed % 5 == 2:  # some publishers send the article too
            paragraphs = "".join(f"<p>{escape(self.text(rng, lang, 30, 60))}.</p>"
                                 for _ in range(3))
            parts.append(f"<content:encoded><![CDATA[{paragraphs}]]></content:encoded>")
        return "<item>" + "".join(parts) + "</item>\n"

    def feed(self, feed: int, version: int) -> bytes:
        lang = language(feed)
        newest = self.items - 1 + version * self.new_per_change
        title = f"News {feed} — {SECTIONS[lang][feed % len(SECTIONS[lang])]}"
        head = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/" '
            'xmlns:media="http://search.yahoo.com/mrss/" '
            'xmlns:atom="http://www.w3.org/2005/Atom" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/">\n<channel>\n'
            f"<title>{escape(title)}</title><link>https://news{feed}.example/</link>"
            f"<atom:link href={quoteattr(f'https://news{feed}.example/rss.xml')} rel=\"self\" "
            f'type="application/rss+xml"/><description>{escape(title)}</description>'
            f"<language>{'zh-cn' if lang == 'zh' else lang}</language><ttl>15</ttl>"
            f"<lastBuildDate>{format_datetime(self.epoch + timedelta(minutes=version))}"
            "</lastBuildDate>\n")
        items = "".join(self.item(feed, seq) for seq in range(newest, newest - self.items, -1))
        return (head + items + "</channel>\n</rss>\n").encode()


# The feed server (a process of its own) -------------------------------------------------------

class FeedStore:
    def __init__(self, corpus: Corpus, feeds: int, compress: bool):
        self.corpus = corpus
        self.compress = compress
        self.version = [0] * feeds
        self.cache: dict[tuple[int, int], tuple[bytes, bytes | None, str, str, float]] = {}
        self.counts: collections.Counter[str] = collections.Counter()
        for feed in range(feeds):
            self.get(feed)

    def get(self, feed: int) -> tuple[bytes, bytes | None, str, str, float]:
        key = (feed, self.version[feed])
        if key not in self.cache:
            body = self.corpus.feed(*key)
            modified = self.corpus.epoch + timedelta(minutes=key[1])
            self.cache[key] = (body, gzip.compress(body, 6) if self.compress else None,
                               f'"{feed:x}-{key[1]}-{zlib.crc32(body):08x}"',
                               format_datetime(modified, usegmt=True), modified.timestamp())
        return self.cache[key]

    def admin(self, action: str, query: dict[str, str]) -> dict:
        if action == "change":
            step = max(1, round(1 / float(query["fraction"])))
            changed = list(range(0, len(self.version), step))
            for feed in changed:
                self.version[feed] += 1
                self.get(feed)
            return {"changed": len(changed)}
        if action == "reset":
            self.version = [0] * len(self.version)
            return {"reset": True}
        if action == "stats":
            stats = dict(self.counts)
            sizes = [len(self.get(f)[0]) for f in range(len(self.version))]
            zipped = [len(self.get(f)[1] or b"") for f in range(len(self.version))]
            stats.update(avg_bytes=sum(sizes) / len(sizes), avg_gzip_bytes=sum(zipped) / len(sizes))
            self.counts.clear()
            return stats
        return {"error": f"unknown action {action}"}

    def answer(self, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        path, _, query = target.partition("?")
        if path.startswith("/_admin/"):
            result = self.admin(path.removeprefix("/_admin/"), dict(urllib.parse.parse_qsl(query)))
            return 200, {"Content-Type": "application/json"}, json.dumps(result).encode()
        match = re.fullmatch(r"/feed/(\d+)\.xml", path)
        if not match or int(match.group(1)) >= len(self.version):
            self.counts["404"] += 1
            return 404, {"Content-Type": "text/plain"}, b"not found"
        body, zipped, etag, modified, stamp = self.get(int(match.group(1)))
        validators = {"ETag": etag, "Last-Modified": modified}
        if "if-none-match" in headers:
            fresh = etag in [t.strip() for t in headers["if-none-match"].split(",")]
        elif "if-modified-since" in headers:
            try:
                fresh = parsedate_to_datetime(headers["if-modified-since"]).timestamp() >= stamp
            except (TypeError, ValueError):
                fresh = False
        else:
            fresh = False
        if fresh:
            self.counts["304"] += 1
            return 304, validators, b""
        self.counts["200"] += 1
        out = {"Content-Type": "application/rss+xml; charset=utf-8", **validators}
        if zipped is not None and "gzip" in headers.get("accept-encoding", ""):
            out["Content-Encoding"] = "gzip"
            body = zipped
        return 200, out, body


REASONS = {200: "OK", 304: "Not Modified", 404: "Not Found", 400: "Bad Request"}


async def serve(store: FeedStore, latency: float = 0.0) -> None:
    async def connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
                request, *lines = head.split("\r\n")
                headers = {}
                for line in lines:
                    name, sep, value = line.partition(":")
                    if sep:
                        headers[name.strip().lower()] = value.strip()
                method, target, version = request.split(" ", 2)
                status, out, body = store.answer(target, headers)
                if latency and not target.startswith("/_admin/"):  # not the bench's own
                    await asyncio.sleep(latency)
                close = headers.get("connection", "").lower() == "close" or version == "HTTP/1.0"
                lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}",
                         *(f"{k}: {v}" for k, v in out.items()),
                         f"Content-Length: {len(body) if method != 'HEAD' else 0}",
                         "Connection: close" if close else "Connection: keep-alive"]
                writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
                if method != "HEAD" and status != 304:
                    writer.write(body)
                await writer.drain()
                if close:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError,
                ValueError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(connection, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"READY {port}", flush=True)
    async with server:
        await server.serve_forever()


def server_main(args: argparse.Namespace) -> None:
    corpus = Corpus(args.items, args.new_items, datetime.fromisoformat(args.epoch),
                    vocabulary(args.corpus))
    store = FeedStore(corpus, args.feeds, compress=not args.no_gzip)
    asyncio.run(serve(store, args.latency))


class FeedServer:
    """The server process, seen from the bench."""

    def __init__(self, args: argparse.Namespace, epoch: datetime):
        command = [sys.executable, __file__, "--serve", "--feeds", str(args.feeds),
                   "--items", str(args.items), "--new-items", str(args.new_items),
                   "--epoch", epoch.isoformat(), "--corpus", str(args.corpus)] \
            + (["--no-gzip"] if args.no_gzip else []) \
            + (["--latency", str(args.latency)] if args.latency else [])
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.startswith("READY "):
            raise SystemExit(f"the feed server did not start: {line!r}")
        self.port = int(line.split()[1])
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def url(self, feed: int) -> str:
        return f"http://127.0.0.1:{self.port}/feed/{feed}.xml"

    def admin(self, action: str, **query: object) -> dict:
        url = f"http://127.0.0.1:{self.port}/_admin/{action}?{urllib.parse.urlencode(query)}"
        with self.opener.open(url, timeout=120) as response:
            return json.loads(response.read())

    def close(self) -> None:
        self.process.terminate()
        self.process.wait()


# monitor (a worker process running App, driven over stdin/stdout) -----------------------------

def memory() -> dict[str, float]:
    """Resident memory now and at its peak, in MB (Linux /proc), of this process and its
    children (the feed-parsing workers) together. The peaks are summed, which can only
    overstate: the processes need not peak at the same moment."""
    pids = [str(os.getpid())]
    for task in Path("/proc/self/task").iterdir():
        pids += (task / "children").read_text().split()
    totals = {"VmRSS": 0.0, "VmHWM": 0.0}
    own_peak = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith(("VmRSS:", "VmHWM:")):
                        totals[line.split(":")[0]] += int(line.split()[1]) / 1024
                        if pid == pids[0] and line.startswith("VmHWM:"):
                            own_peak = int(line.split()[1]) / 1024
        except FileNotFoundError:
            continue  # a child that has just exited
    return {"rss_mb": totals["VmRSS"], "peak_mb": totals["VmHWM"], "own_peak_mb": own_peak}


def cpu_seconds() -> dict[str, float]:
    """CPU time (user and system) so far of this process and of its live children together (a
    worker replaced during a cycle takes its time with it; none is in these runs)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {"daemon": 0.0, "workers": 0.0}
    pids = [str(os.getpid())]
    for task in Path("/proc/self/task").iterdir():
        pids += (task / "children").read_text().split()
    for n, pid in enumerate(pids):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except FileNotFoundError:
            continue
        found["daemon" if n == 0 else "workers"] += (int(fields[11]) + int(fields[12])) / ticks
    return found


def worker_main() -> None:
    from sqlalchemy import update

    from monitor.app import App
    from monitor.logs import configure
    from monitor.pipeline import utcnow
    from monitor.settings import load_settings
    from monitor.store.models import Source

    async def run() -> None:
        settings = load_settings(_env_file=None)
        configure(settings.log_level, settings.log_format)
        app = App(settings)
        try:
            while True:
                command = (await asyncio.to_thread(sys.stdin.readline)).strip()
                if command == "cycle":
                    # Every source due now, then the daemon's own path: leased in batches.
                    assert app.store is not None
                    with app.store.engine.begin() as connection:
                        connection.execute(update(Source).values(next_poll_at=utcnow()))
                started, cpu = time.perf_counter(), cpu_seconds()
                if command == "start":
                    await app.start()
                    reply: dict = {}
                elif command == "cycle":
                    reports = await app.poll_due()
                    reply = {"statuses": dict(collections.Counter(str(r.status) for r in reports)),
                             "new": sum(r.new for r in reports),
                             "alerts": sum(r.alerts for r in reports),
                             "errors": collections.Counter(r.error for r in reports
                                                           if r.error).most_common(3)}
                else:
                    break
                reply.update(seconds=time.perf_counter() - started, **memory(),
                             cpu={k: v - cpu.get(k, 0.0) for k, v in cpu_seconds().items()})
                print(json.dumps(reply), flush=True)
        finally:
            await app.close()

    asyncio.run(run())


def catch_up(monitor: Monitor, server: FeedServer, results: dict) -> None:
    """Sources that failed in the full cycle would make the next one not a nothing-changed
    cycle: poll again (reported, not in the table) until every source has been stored once,
    three times at most."""
    last = results["full"]
    for _ in range(3):
        if not last["statuses"].get("None"):
            return
        print(f"  monitor catch-up: {last['statuses']['None']} sources failed; polling again",
              file=sys.stderr)
        server.admin("stats")
        last = monitor.ask("cycle")
        last["served"] = server.admin("stats")
        results.setdefault("catch_up", []).append(last)


class Profiler:
    """py-spy sampling one process for the length of one cycle."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.process: subprocess.Popen | None = None
        if directory is not None:
            directory.mkdir(parents=True, exist_ok=True)
            self.binary = ensure_venv_tool(PYSPY_VENV, "py-spy", "py-spy")

    def start(self, pid: int, name: str) -> None:
        if self.directory is None:
            return
        self.output = self.directory / f"{name}.txt"
        self.process = subprocess.Popen(
            [str(self.binary), "record", "--pid", str(pid), "--subprocesses", "--rate", "250",
             "--format", "raw", "--nonblocking", "-o", str(self.output)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)  # let it attach before the cycle starts

    def stop(self) -> Path | None:
        if self.process is None:
            return None
        self.process.send_signal(signal.SIGINT)
        self.process.wait(timeout=60)
        self.process = None
        return self.output


class Monitor:
    def __init__(self, root: Path, server: FeedServer, args: argparse.Namespace):
        rules = root / "rules"
        rules.mkdir()
        for name in ("entities.yaml", "watchlist.yaml"):
            shutil.copy(REPO / "rules" / name, rules / name)
        (rules / "feeds.yaml").write_text(
            "feeds:\n" + "".join(f"  - url: {server.url(i)}\n    name: News {i}\n"
                                 for i in range(args.feeds)), encoding="utf-8")
        env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
        env.update(MONITOR_DATABASE_URL=f"sqlite:///{root / 'monitor.db'}",
                   MONITOR_RULES_DIR=str(rules), NO_PROXY="127.0.0.1,localhost")
        if args.concurrency:
            env["MONITOR_FETCH_CONCURRENCY"] = str(args.concurrency)
        # Every feed is on one local server standing in for as many publishers: the per-host
        # limit would make it one publisher with a thousand feeds.
        env["MONITOR_FETCH_PER_HOST"] = str(args.concurrency or 256)
        env.update(setting.split("=", 1) for setting in args.set)
        self.log = root / "monitor.log"
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--worker"], cwd=root, env=env, text=True,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log.open("w"))

    def ask(self, command: str) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            raise SystemExit(f"monitor's worker died; see {self.log}:\n"
                             + self.log.read_text()[-3000:])
        return json.loads(line)

    def close(self) -> None:
        if self.process.poll() is None:
            assert self.process.stdin is not None
            self.process.stdin.write("quit\n")
            self.process.stdin.close()
            self.process.wait(timeout=120)


# rss2email ------------------------------------------------------------------------------------

def ensure_venv_tool(venv: Path, package: str, tool: str) -> Path:
    binary = venv / "bin" / tool
    if not binary.exists():
        print(f"installing {package} into {venv} …", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", package], check=True)
    return binary


class Rss2Email:
    def __init__(self, root: Path, server: FeedServer, args: argparse.Namespace):
        self.binary = Path(args.r2e) if args.r2e else ensure_venv_tool(R2E_VENV, "rss2email",
                                                                         "r2e")
        self.config, self.data = root / "r2e.cfg", root / "r2e.json"
        self.env = {**os.environ, "NO_PROXY": "127.0.0.1,localhost"}
        self.r2e("new", "bench@example.invalid")
        # `r2e add` is one process per feed; sections in the config file are read the same way.
        with self.config.open("a", encoding="utf-8") as config:
            config.write("".join(f"\n[feed.news{i:05d}]\nurl = {server.url(i)}\n"
                                 for i in range(args.feeds)))

    def r2e(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(self.binary), "-c", str(self.config), "-d", str(self.data),
                               *args], env=self.env, capture_output=True, text=True, check=True)

    def cycle(self) -> dict:
        started = time.perf_counter()
        process = subprocess.Popen(
            [str(self.binary), "-c", str(self.config), "-d", str(self.data), "run", "--no-send"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert process.stderr is not None
        errors = process.stderr.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - started
        if process.returncode:
            raise SystemExit(f"r2e run failed ({process.returncode}):\n{errors[-3000:]}")
        seen = sum(len(feed.get("seen", {}))
                   for feed in json.loads(self.data.read_text(encoding="utf-8"))["feeds"])
        return {"seconds": seconds, "peak_mb": usage.ru_maxrss / 1024, "seen": seen}


# Profiles -------------------------------------------------------------------------------------

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def short(frame: str) -> str:
    match = FRAME.match(frame)
    if not match:
        return frame
    path = match.group("file")
    for marker in ("site-packages/", "/monitor/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            if marker == "/monitor/":
                path = "monitor/" + path
            break
    return f"{match.group('func')} ({path})"


def summarise(path: Path, top: int = 22) -> str:
    """Inclusive and self shares of the samples, per function, over every thread."""
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [short(f) for f in stack.split(";") if f]
        if not frames:
            continue
        total += n
        own[frames[-1]] += n
        for frame in set(frames):
            inclusive[frame] += n
    if not total:
        return "  (no samples)"
    out = [f"  {total} samples; inclusive (monitor's own functions and the big library calls):"]
    interesting = [(f, n) for f, n in inclusive.most_common()
                   if "monitor/" in f or any(k in f for k in (
                       "feedparser", "sqlalchemy", "httpx", "httpcore", "structlog", "sqlite3",
                       "chardet", "w3lib", "ahocorasick", "gzip", "zlib"))]
    seen_files: collections.Counter[str] = collections.Counter()
    for frame, n in interesting:
        name = frame.split(" (")[-1].rstrip(")")
        seen_files[name] += 1
        if seen_files[name] > 4:  # keep the table short: the top functions of each file
            continue
        out.append(f"    {100 * n / total:5.1f}%  {frame}")
        if len(out) > top:
            break
    out.append("  self (where the CPU actually is):")
    out.extend(f"    {100 * n / total:5.1f}%  {frame}" for frame, n in own.most_common(top))
    return "\n".join(out)


# The run --------------------------------------------------------------------------------------

def fmt_s(value: float | None) -> str:
    return "—" if value is None else f"{value:8.2f} s"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=50)
    parser.add_argument("--changed", type=float, default=0.10,
                        help="share of the feeds changed for cycle 3")
    parser.add_argument("--new-items", type=int, default=3, help="new items per changed feed")
    parser.add_argument("--skip-peer", action="store_true", help="do not run rss2email")
    parser.add_argument("--r2e", help="the r2e executable (default: /tmp/r2e-venv/bin/r2e)")
    parser.add_argument("--concurrency", type=int,
                        help="MONITOR_FETCH_CONCURRENCY (default: monitor's own default)")
    parser.add_argument("--no-gzip", action="store_true", help="serve feeds uncompressed")
    parser.add_argument("--latency", type=float, default=0.0, metavar="SECONDS",
                        help="the server waits this long before each answer (default 0)")
    parser.add_argument("--profile", type=Path, help="py-spy each monitor cycle into DIR")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for monitor, such as MONITOR_PARSE_PROCESSES=2")
    parser.add_argument("--corpus", type=Path, default=REPO.parent / "shared" / "corpus",
                        help="the test corpus, whose publisher feeds give the vocabulary")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--epoch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.latency < 0:
        parser.error("--latency cannot be negative")
    if args.serve:
        return server_main(args)
    if args.worker:
        return worker_main()

    epoch = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    root = Path(tempfile.mkdtemp(prefix="monitor-bench-"))
    print(f"serving {args.feeds} feeds × {args.items} items …", file=sys.stderr)
    server = FeedServer(args, epoch)
    profiler = Profiler(args.profile)
    results: dict[str, dict] = {"monitor": {}, "rss2email": {}}
    try:
        sizes = server.admin("stats")
        print(f"monitor: one process, App.start() then every source due and App.poll_due() per "
              f"cycle; log in {root / 'monitor.log'}", file=sys.stderr)
        (root / "monitor").mkdir()
        monitor = Monitor(root / "monitor", server, args)
        try:
            results["monitor"]["start"] = monitor.ask("start")
            for name, change in (("full", False), ("unchanged", False), ("changed", True)):
                if change:
                    server.admin("change", fraction=args.changed)
                if name == "unchanged":
                    catch_up(monitor, server, results["monitor"])
                server.admin("stats")  # reset the counters
                profiler.start(monitor.process.pid, f"monitor-{name}")
                results["monitor"][name] = monitor.ask("cycle")
                profile = profiler.stop()
                results["monitor"][name]["served"] = server.admin("stats")
                if profile:
                    results["monitor"][name]["profile"] = profile
                print(f"  monitor {name}: {results['monitor'][name]['seconds']:.2f} s",
                      file=sys.stderr)
        finally:
            monitor.close()
        if not args.skip_peer:
            server.admin("reset")
            (root / "r2e").mkdir()
            peer = Rss2Email(root / "r2e", server, args)
            print(f"rss2email: {peer.binary} run --no-send, once per cycle", file=sys.stderr)
            for name, change in (("full", False), ("unchanged", False), ("changed", True)):
                if change:
                    server.admin("change", fraction=args.changed)
                server.admin("stats")
                results["rss2email"][name] = peer.cycle()
                results["rss2email"][name]["served"] = server.admin("stats")
                print(f"  rss2email {name}: {results['rss2email'][name]['seconds']:.2f} s",
                      file=sys.stderr)
    finally:
        server.close()
        if args.keep:
            print(f"kept {root}", file=sys.stderr)
        else:
            shutil.rmtree(root, ignore_errors=True)
    report(args, sizes, results)


def report(args: argparse.Namespace, sizes: dict, results: dict[str, dict]) -> None:
    m, r = results["monitor"], results["rss2email"]
    print(f"\n{args.feeds} feeds × {args.items} items, {sizes['avg_bytes'] / 1024:.0f} KB each "
          f"on average ({sizes['avg_gzip_bytes'] / 1024:.0f} KB gzipped"
          f"{', not served gzipped' if args.no_gzip else ''}); cycle 3 changes "
          f"{args.changed:.0%} of the feeds, {args.new_items} new items each; "
          f"concurrency {args.concurrency or 'default'}"
          + (f"; every answer {args.latency * 1000:.0f} ms late (--latency)" if args.latency
             else ""))
    print(f"{'':24}{'monitor':>12}{'rss2email':>12}{'ratio':>9}   target")
    print(f"{'startup (App.start)':24}{fmt_s(m['start']['seconds']):>12}{'—':>12}")
    checks = []
    for name, label in (("full", "1 full cycle"), ("unchanged", "2 nothing changed"),
                        ("changed", "3 10% changed")):
        ms = m[name]["seconds"]
        rs = r[name]["seconds"] if name in r else None
        ratio = f"{rs / ms:7.1f}×" if rs else "—"
        target = ""
        if name == "full":
            target = f"≥{TARGETS['full_ratio']:g}× faster than rss2email"
            if rs:
                checks.append(rs / ms >= TARGETS["full_ratio"])
        elif name == "unchanged":
            target = (f"<{TARGETS['unchanged_s']:g} s and ≥{TARGETS['unchanged_ratio']:g}× "
                      "faster than rss2email")
            checks.append(ms < TARGETS["unchanged_s"] and (not rs or rs / ms >=
                                                           TARGETS["unchanged_ratio"]))
        mark = "" if not target else ("  (set without --latency)" if args.latency else
                                      "  PASS" if checks and checks[-1] else "  FAIL")
        print(f"{label:24}{fmt_s(ms):>12}{fmt_s(rs):>12}{ratio:>9}   {target}{mark}")
    peak = max(c["peak_mb"] for c in [m["start"], m["full"], m["unchanged"], m["changed"],
                                        *m.get("catch_up", [])])
    r_peak = max((r[n]["peak_mb"] for n in r), default=None)
    ok = peak < TARGETS["rss_mb"]
    own = max(c.get("own_peak_mb", 0.0) for c in [m["start"], m["full"], m["unchanged"],
                                                  m["changed"], *m.get("catch_up", [])])
    print(f"{'peak memory (RSS)':24}{peak:9.0f} MB"
          f"{(f'{r_peak:9.0f} MB' if r_peak else '—'):>12}{'':9}   "
          f"<{TARGETS['rss_mb']} MB  {'PASS' if ok else 'FAIL'}  (the daemon's process alone: "
          f"{own:.0f} MB; the rest is its workers')")
    print("\nwhat each cycle did (status None: the source failed; served: the server's answers):")
    cycles = [("full", m["full"]), *((f"catch-up {i + 1}", c)
                                     for i, c in enumerate(m.get("catch_up", []))),
              ("unchanged", m["unchanged"]), ("changed", m["changed"])]
    for name, cycle in cycles:
        served = {k: v for k, v in cycle["served"].items() if not k.startswith("avg")}
        line = (f"  {name:10} monitor: {cycle['seconds']:.2f} s, statuses {cycle['statuses']}, "
                f"new items {cycle['new']}, alerts {cycle['alerts']}, served {served}; CPU "
                f"{cycle['cpu']['daemon']:.2f} s the daemon, {cycle['cpu']['workers']:.2f} s "
                "its workers")
        for error, count in cycle["errors"]:
            line += f"\n  {'':10}   {count} × {' '.join(error.split())[:150]}"
        print(line)
        if name in r:
            r[name]["served"] = {k: v for k, v in r[name]["served"].items()
                                 if not k.startswith("avg")}
            print(f"  {'':10} rss2email: entries seen {r[name]['seen']}, "
                  f"served {r[name]['served']}")
    for name in ("full", "unchanged", "changed"):
        if "profile" in m[name]:
            print(f"\nprofile of monitor's {name} cycle ({m[name]['profile']}):")
            print(summarise(m[name]["profile"]))


if __name__ == "__main__":
    main()
