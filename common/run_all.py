"""Rerun every experiment (or a selection), resuming what is finished, then regenerate the summary.

    python -m common.run_all                      # everything, one trial at a time
    python -m common.run_all --only 'exp1*' exp007 --jobs 2
    python -m common.run_all --from exp105 --dry-run
    python -m common.run_all --only 'exp1*' --round-robin --jobs 2   # rows grow together
    python -m common.run_all --only 'exp2*' --only 'exp1*' --round-robin --jobs 2   # exp2xx first
    python -m common.run_all --ray auto --gpus-per-trial 0.25        # on a Ray cluster
    python -m common.run_all --only exp114 exp203 --jobs 2 --until 00:45    # what ends by 00:45
    python -m common.run_all --only exp104 --set l2=0.01,0.003 --set batch_size=32,64 --trials 3  # a sweep

Each trial runs as its own `python expNNN_<slug>/train.py --trial I` process, so a crash, a NaN
loss or a bad config stops that trial only: the others go on, the failures are reported at the
end, and the exit code is 1. Trials hold a lock while they run, so two run_all processes on the
same results directory never run the same trial twice. With --jobs N, N trials run side by side
with cores/N TensorFlow threads each (thread count is part of what makes a trial reproducible:
rerun with the same --jobs to get the same numbers). An evaluation-only experiment (exp207: exp206
scored with test-time flips) waits for its base's same trial and scores the weights it kept instead
of training them again (under --ray it trains them itself). At the end the summary, plots and README
table are regenerated (not after --smoke: smoke results are never summarised).

--until HH:MM (or +90m) starts a trial only where it is expected to end by then: the median time of its
experiment's finished trials (on this CPU model and thread count where it has some) less what its
checkpoint has done. The others are held back and listed; a rerun starts them. For a session or a
lent machine that ends at a known time: nothing is left half-run at the end.

--set KEY=V1,V2,... (repeatable) runs every combination of the values as variants of each selected
experiment (common.variants), filed beside its recipe under <experiment>/variants/<key=value,...>/;
a combination equal to the recipe is the recipe. --epochs N makes a variant in the same way: a
trial capped at N epochs is not the recipe's trial.
"""

from __future__ import annotations

import argparse
import math
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections import deque
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from common import data as fmnist
from common import experiments, results, summarize, variants
from common.checkpoint import Checkpoint
from common.trials import collect_trials
from common.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, interrupts_kept, stop_if_interrupted
from common.schedule import Trial, next_ready, plan, threads_per_trial, train_arguments, waits_elsewhere

LOG_NAME = "run_all.log"
EPOCH_LINE = re.compile(r" epoch +(\d+)/(\d+) ")  # the runner's per-epoch progress line


def trial_command(trial: Trial, args: argparse.Namespace, threads: int) -> list[str]:
    command = [sys.executable, "-u", str(trial.folder / "train.py"), *train_arguments(trial, args, threads),
               "--results-dir", str(args.results_dir)]
    return command + (["--force"] if args.force else [])


def _clock(seconds: float) -> str:
    if seconds != seconds:  # NaN: nothing finished yet to estimate from
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}"


def _read_lines(process: subprocess.Popen, trial: Trial, lines: queue.Queue) -> None:
    for line in process.stdout:
        lines.put((trial, line.rstrip("\n")))
    lines.put((trial, None))  # end of output


def expected_seconds(trial: Trial, typical: dict[str, float], took: dict[str, list[float]] | None = None,
                     guess: bool = False) -> float:
    """A trial's expected seconds: the median of its experiment's (or variant's) trials that ran now
    (`took`), else `typical` (typical_seconds), else its recipe's; `guess`: else the mean over the
    other experiments. NaN where nothing is known."""
    took = took or {}
    if took.get(trial.label):
        return statistics.median(took[trial.label])
    for known in (trial.label, trial.folder.name):  # a variant without trials: its recipe's time
        if known in typical:
            return typical[known]
    known = [s for times in took.values() for s in times] or list(typical.values())
    return statistics.mean(known) if known and guess else math.nan


class Progress:
    """What run_all shows while trials run: a live bar on a terminal, else one plain line per event.

    Time left: each remaining trial is expected to take as long as the trials of its experiment
    took (in this run, else the median of its finished trials in the results), spread over the
    trials that run at once.
    """

    def __init__(self, todo: list[Trial], parallel: int, typical_seconds: dict[str, float] | None = None):
        self.todo, self.parallel, self.started = todo, max(1, parallel), time.time()
        self.typical = dict(typical_seconds or {})
        self.took: dict[str, list[float]] = {}
        self.ended = 0
        self.bar = tqdm(total=len(todo), unit="trial", dynamic_ncols=True, disable=not sys.stderr.isatty(),
                        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} trials [{elapsed}<{remaining}] {postfix}")

    def expected(self, trial: Trial, guess: bool = True) -> float:
        return expected_seconds(trial, self.typical, self.took, guess)

    def counts(self) -> str:
        now = time.time()
        left = 0.0
        for trial in self.todo:
            if trial.returncode is None and not trial.held:  # not ended: running (part done) or waiting
                done = now - trial.seconds if trial.seconds else 0.0
                left += max(0.0, self.expected(trial) - done)
        return (f"[{self.ended}/{len(self.todo)} trials, {_clock(now - self.started)} elapsed, "
                f"~{_clock(left / self.parallel)} left]")

    def start(self, trial: Trial, where: str = "") -> None:
        trial.seconds = time.time()
        self.bar.write(f"start {trial.name} of {trial.trials}{where}")

    def running(self, trials) -> None:
        self.bar.set_postfix_str("; ".join(f"{variants.label(experiments.experiment_id(t.folder), t.variant_name)} "
                                           f"trial {t.index} epoch "
                                           f"{t.last_line or '-'}" for t in trials), refresh=False)

    def end(self, trial: Trial) -> None:
        """Report a trial whose returncode (and error, if any) is set; its tail holds its last lines."""
        trial.seconds = time.time() - trial.seconds
        self.took.setdefault(trial.label, []).append(trial.seconds)
        self.ended += 1
        self.bar.update(1)
        if trial.returncode == 0 and not trial.error:
            done = next((line for line in reversed(trial.tail) if " done: " in line or "another process" in line), "")
            self.bar.write(f"ok    {trial.name}: {done.split(' done: ')[-1] if done else 'nothing to do'} "
                           f"{self.counts()}")
        else:
            if not trial.error:
                errors = [line for line in trial.tail if line.startswith("error:") or "Error" in line]
                trial.error = errors[-1] if errors else (trial.tail[-1] if trial.tail else "no output")
            self.bar.write(f"FAIL  {trial.name} (exit {trial.returncode}): {trial.error} {self.counts()}")

    def held(self, trial: Trial) -> None:
        self.ended += 1
        self.bar.update(1)
        self.bar.write(f"held  {trial.name}: {trial.held} {self.counts()}")

    def interrupted(self, trial: Trial) -> None:
        """A trial stopped by an interrupt: it keeps its own time for the report and is not counted as ended."""
        trial.error = "interrupted"
        trial.seconds = time.time() - trial.seconds  # it held its start time while it ran

    def close(self) -> None:
        self.bar.close()


def execute(todo: list[Trial], args: argparse.Namespace, log_path: Path) -> bool:
    """Run the trials as local processes, `args.jobs` at a time; returns False when interrupted."""
    threads = threads_per_trial(args.jobs)
    waiting, running = deque(todo), {}
    lines: queue.Queue = queue.Queue()
    progress = Progress(todo, args.jobs, args.typical_seconds)
    interrupted = False
    with open(log_path, "a", buffering=1) as log:  # line by line: `tail -f` it to watch the trials
        log.write(f"\n=== run_all started {results.now_iso()}: {len(todo)} trial(s) ===\n")
        try:
            while waiting or running:
                stop_if_interrupted()  # one Python dropped in a finalizer
                while waiting and len(running) < args.jobs:
                    trial = next_ready(waiting)
                    if trial is None and (running or any(map(waits_elsewhere, waiting))):
                        break  # all wait for base trials that are running (here or elsewhere): poll again
                    trial = trial or waiting.popleft()  # nothing runs that they wait for: never hang
                    trial.held = held_back(trial, progress.expected(trial, guess=False), args) if args.until else ""
                    if trial.held:
                        progress.held(trial)
                        continue
                    process = subprocess.Popen(trial_command(trial, args, threads), stdout=subprocess.PIPE,
                                               stderr=subprocess.STDOUT, text=True, bufsize=1)
                    running[trial] = process
                    threading.Thread(target=_read_lines, args=(process, trial, lines), daemon=True).start()
                    progress.start(trial)
                try:
                    trial, line = lines.get(timeout=1.0)
                except queue.Empty:
                    continue
                if line is not None:
                    log.write(f"[{trial.name}] {line}\n")
                    trial.tail.append(line)
                    epoch = EPOCH_LINE.search(line)
                    if epoch:
                        trial.last_line = f"{epoch[1]}/{epoch[2]}"
                    progress.running(running)
                    continue
                trial.returncode = running.pop(trial).wait()
                progress.end(trial)
        except KeyboardInterrupt:
            interrupted = True
            for process in running.values():
                process.send_signal(signal.SIGINT)  # each saves its last finished epoch and exits
            for trial, process in running.items():
                trial.returncode = process.wait()
                progress.interrupted(trial)
        finally:
            progress.close()
    return not interrupted


def typical_seconds(results_dir: Path, data_name: str, cpu_model: str | None = None,
                    threads: int | None = None) -> dict[str, float]:
    """Median wall time of the finished trials of each experiment and variant (by label, as
    Trial.label) on this data: the basis of "time left" and of --until. Of its trials on this CPU
    model with this many threads where it has any (CPUs differ several-fold), else of all."""
    finished, _ = collect_trials(results_dir, with_variants=True)
    if finished.empty:
        return {}
    finished = finished[(finished.data == data_name) & (finished.split == "test")]
    finished = finished.assign(label=[variants.label(f, v) for f, v in zip(finished.folder, finished.variant)])
    typical = finished.groupby("label").wall_seconds.median().to_dict()
    if not cpu_model:
        return typical
    here = finished[(finished.cpu_model == cpu_model) & (finished.threads == threads)]
    return typical | here.groupby("label").wall_seconds.median().to_dict()


def parse_until(text: str, now: float | None = None) -> float:
    """--until's time as seconds since the epoch: HH:MM (the next such time, local), or +90m / +2h
    from now."""
    now = time.time() if now is None else now
    relative = re.fullmatch(r"\+(\d+(?:\.\d+)?)([mh])", text.strip())
    if relative:
        return now + float(relative[1]) * (60 if relative[2] == "m" else 3600)
    clock = re.fullmatch(r"(\d{1,2}):(\d{2})", text.strip())
    if not clock or int(clock[1]) > 23 or int(clock[2]) > 59:
        raise argparse.ArgumentTypeError(f"{text!r}: give a time as HH:MM (e.g. 00:45) or a span from now "
                                         f"as +90m or +2h")
    today = time.localtime(now)
    at = time.mktime((today.tm_year, today.tm_mon, today.tm_mday, int(clock[1]), int(clock[2]), 0, 0, 0, -1))
    return at if at > now else time.mktime(  # tomorrow's, where today's has passed
        (today.tm_year, today.tm_mon, today.tm_mday + 1, int(clock[1]), int(clock[2]), 0, 0, 0, -1))


def held_back(trial: Trial, expected: float, args: argparse.Namespace) -> str:
    """Why a trial should not start now under --until ("" if it may): expected (seconds, NaN where
    unknown) to end after it, or no time to expect, or it waits for a trial held back."""
    if trial.after is not None and trial.after.held:
        return f"waits for {trial.after.name}, held back"
    if math.isnan(expected):
        return "no finished trial of its experiment to expect its time from"
    state = Checkpoint(trial.directory(args.results_dir, args.data_name, args.smoke)
                       / results.CHECKPOINT_DIR).load_state()
    left = max(0.0, expected - (state or {}).get("wall_seconds", 0.0))  # a resumed trial: what remains
    ends = time.time() + left
    if ends > args.until:
        return (f"expected to take {_clock(left)}, to end {_clock(ends - args.until)} after --until "
                f"{time.strftime('%H:%M', time.localtime(args.until))}")
    return ""


def report(trials: list[Trial], ran: list[Trial]) -> pd.DataFrame:
    """Per experiment: trials done, and of `ran` (the queue) those that started: ran now, failed, minutes."""
    rows = []
    for label in dict.fromkeys(t.label for t in trials):
        mine = [t for t in trials if t.label == label]
        now = [t for t in ran if t.label == label and (t.returncode is not None or t.error)]  # started
        failed = [t for t in now if t.returncode not in (0, None) or t.error]
        finished = sum(t.state == "done" for t in mine) + sum(t.returncode == 0 and not t.error for t in now)
        rows.append({"experiment": label, "trials done": f"{finished}/{len(mine)}",
                     "ran now": len(now), "failed": len(failed),
                     "minutes": round(sum(t.seconds for t in now) / 60, 1),
                     "error": failed[0].error if failed else ""})
    return pd.DataFrame(rows)


def _assignment(text: str) -> tuple[str, list[str]]:
    try:
        return variants.parse_assignment(text)
    except variants.VariantError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.run_all", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--only", nargs="+", action="append", metavar="NAME",
                        help="ids, folder names or patterns (quote them: 'exp1*'); given again, a later "
                             "stage of one queue: --only 'exp2*' --only 'exp1*' runs every exp2xx trial "
                             "before any exp1xx one, and no core waits between the two")
    parser.add_argument("--from", dest="start", metavar="NAME", help="start at this experiment")
    parser.add_argument("--trials", type=int, help="trials per experiment (default: each one's own)")
    parser.add_argument("--epochs", type=int, help="cap the epochs: a variant (epochs=N) of each experiment")
    parser.add_argument("--set", action="append", metavar="KEY=V1,V2", type=_assignment,
                        help="run variants: every combination of the values of each --set (a grid), as "
                             "variants of each selected experiment; e.g. --set l2=0.01,0.003 --set batch_size=32,64")
    parser.add_argument("--planned", action="store_true",
                        help="run the variants each selected experiment lists in its variants.txt, with "
                             "the trial counts it gives (unless --trials)")
    parser.add_argument("--smoke", action="store_true", help="tiny subset, one epoch and trial each")
    parser.add_argument("--data-dir")
    parser.add_argument("--results-dir", type=Path, default=results.default_results_dir())
    parser.add_argument("--jobs", type=int, default=1, help="trials run side by side (default: 1)")
    parser.add_argument("--force", action="store_true", help="rerun finished trials")
    parser.add_argument("--round-robin", action="store_true",
                        help="trial 0 of every experiment, then trial 1 of every one, and so on, so that "
                             "the rows grow together (default: all trials of one experiment, then the next)")
    parser.add_argument("--dry-run", action="store_true", help="list what would run and what is done")
    parser.add_argument("--until", type=parse_until, metavar="HH:MM|+90m",
                        help="start a trial only where it is expected to end by then (the median time of "
                             "its experiment's finished trials, on this CPU model and thread count where "
                             "there are some); the others are held back for a later run")
    ray_options = parser.add_argument_group("Ray", "run the trials as Ray tasks, here or on a cluster "
                                            "(see common/ray_backend.py and the README)")
    ray_options.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                             help="no address: a local Ray on this machine; 'auto' or ray://host:10001: "
                                  "an existing cluster")
    ray_options.add_argument("--cpus-per-trial", type=float,
                             help="CPUs Ray reserves per trial, and its TensorFlow threads (default: as "
                                  "--jobs gives them without Ray: this machine's cores / jobs)")
    ray_options.add_argument("--gpus-per-trial", type=float, default=0.0,
                             help="GPUs per trial; fractions share a GPU: 0.25 runs four trials on one")
    ray_options.add_argument("--retries", type=int, default=2,
                             help="times a trial whose worker died is run again (default: 2)")
    parser.add_argument("--no-readme", action="store_true",
                        help="do not rewrite README.md (default: rewritten only for the repo's own results/)")
    args = parser.parse_args(argv)
    if args.jobs < 1 or (args.trials is not None and args.trials < 1) or (args.epochs is not None and args.epochs < 1):
        parser.error("--jobs, --trials and --epochs must be at least 1")
    if args.cpus_per_trial is None:  # the threads plain run_all gives a trial: the same numbers
        args.cpus_per_trial = float(threads_per_trial(args.jobs) or (os.cpu_count() or 1))
    if args.until is not None and args.ray:
        parser.error("--until runs local trials only: leave it out with --ray")
    if args.cpus_per_trial <= 0 or args.gpus_per_trial < 0 or args.retries < 0:
        parser.error("--cpus-per-trial must be positive, --gpus-per-trial and --retries not negative")
    args.results_dir = args.results_dir.expanduser().resolve()
    try:
        stages = [experiments.select(only, args.start) for only in (args.only or [None])]
    except experiments.UnknownExperiment as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    folders = list(dict.fromkeys(folder for stage in stages for folder in stage))  # a folder runs in its first stage
    if not folders:
        print("error: no experiment selected", file=sys.stderr)
        return EXIT_USAGE

    try:
        _, copy = fmnist.open_copy(args.data_dir)  # the trials to run are those missing on this data
    except fmnist.DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    if args.ray:
        # Workers run elsewhere (another folder, maybe another node): give them the folder the driver
        # read, as an absolute path (from --data-dir or $FASHION_MNIST_DIR), or nothing for Keras' download.
        args.data_dir = copy.location if copy.source == "idx" else None
    try:
        trials = plan(folders, args, args.results_dir, copy.name)
    except ValueError as e:  # a --set key an experiment lacks, a train.py whose CONFIG cannot be read
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    todo = []
    for stage in stages:  # one queue, stage after stage
        queued = set(todo)
        stage_todo = [t for t in trials
                      if t.folder in stage and t.state in ("pending", "resumable") and t not in queued]
        if args.round_robin:
            stage_todo.sort(key=lambda t: t.index)  # stable: experiment order within each round
        todo += stage_todo
    overview = pd.DataFrame([{"experiment": t.label, "trial": t.index, "state": t.state} for t in trials])
    counts = overview.groupby(["experiment", "state"], sort=False).size().unstack(fill_value=0)
    print(f"data: {copy.name} ({copy.description}; sha256 {copy.fingerprint[:16]}…); results in "
          f"{results.experiment_dir(args.results_dir, copy.name, '', args.smoke)}")
    print(f"{len(folders)} experiment(s), {len(trials)} trial(s): {len(todo)} to run, "
          f"{sum(t.state == 'done' for t in trials)} done, {sum(t.state == 'locked' for t in trials)} "
          f"running elsewhere" + (" [smoke]" if args.smoke else ""))
    print(counts.to_string())
    args.data_name = copy.name
    # smoke trials take seconds: the full trials' times would only mislead; a plain dry run needs none
    args.typical_seconds = {} if args.smoke or (args.dry_run and not args.until) else typical_seconds(
        args.results_dir, copy.name, results.cpu_model(), threads_per_trial(args.jobs) or os.cpu_count())
    if args.dry_run:
        for t in todo:
            if args.ray:
                from common import ray_backend

                print("would run as a Ray task: python", " ".join(ray_backend.trial_command(
                    t, args, max(1, int(args.cpus_per_trial)))))
            else:
                command = trial_command(t, args, threads_per_trial(args.jobs))
                expected = expected_seconds(t, args.typical_seconds)
                t.held = held_back(t, expected, args) if args.until else ""
                print(f"would hold back ({t.held}):" if t.held else f"would run (~{_clock(expected)}):"
                      if args.until else "would run:", "python", " ".join(command[2:])
                      + (f"  (after {t.after.name}{', running elsewhere' if t.after.state == 'locked' else ''}"
                         f": scores its weights)" if t.after else ""))
        return EXIT_OK

    args.results_dir.mkdir(parents=True, exist_ok=True)
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        # Started in the background (`cmd &` in a script), SIGINT arrives ignored: take it back, so that
        # `kill -INT` and `timeout --signal=INT` stop the trials cleanly, as Ctrl-C does.
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if args.ray:
        from common import ray_backend

        try:
            completed = ray_backend.execute(todo, args, copy, args.results_dir / LOG_NAME,
                                            Progress(todo, 1, args.typical_seconds))
        except ray_backend.RayUnavailable as e:
            print(f"error: {e}", file=sys.stderr)
            return EXIT_USAGE
    else:
        with interrupts_kept():
            completed = execute(todo, args, args.results_dir / LOG_NAME)
    table = report(trials, todo)
    print("\n" + table.to_string(index=False))
    held = [t for t in todo if t.held]
    if held:
        print(f"\n{len(held)} trial(s) held back by --until (rerun to run them):\n"
              + "\n".join(f"  {t.name}: {t.held}" for t in held))
    if not args.smoke:
        repo_results = args.results_dir == results.DEFAULT_RESULTS_DIR.resolve()
        readme = results.REPO_ROOT / "README.md" if repo_results and not args.no_readme else None
        summarize.summarize(args.results_dir, readme, data_dir=args.data_dir)
    if not completed:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    failed = table["failed"].sum()
    if failed:
        print(f"{failed} trial(s) failed; full output in {args.results_dir / LOG_NAME}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
