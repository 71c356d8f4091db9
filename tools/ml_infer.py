#!/usr/bin/python3
"""ml_infer: a checkpointable ML inference workload for DistriProc.

A ResNet-50 (torchvision's architecture, written out here in plain torch so
only Debian's python3-torch is needed) with random weights drawn from a fixed
seed, in eval mode, classifying one fixed 224x224 image. The weights (~98 MiB
of float32) are read in the same order on every inference: the "weights are
read-only and scanned in order" workload of the mission.

It answers one request per TCP connection:
  INFER\\n  -> runs one inference now; {"latency_ms", "top1", "digest", "count", ...}
  STAT\\n   -> counters: inferences done, by the loop and on request, recent rate
  QUIT\\n   -> exits (for tests)
With --loop it also infers back to back in the background, so the recent
rate (inferences per second over the last --rate-window seconds) is its
throughput. The digest (a hash of the logits) is a pure function of the seed:
equal digests before a checkpoint and after a restore mean every weight came
back intact.

It writes no file and prints one start line, so CRIU can checkpoint it; run it
as a session leader in its own pid namespace (distriproc lab exec --container).
Needs python3-torch (make deps-ml).
"""
import argparse
import hashlib
import json
import os
import socket
import sys
import threading
import time


def build_resnet50(torch, nn, num_classes=1000):
    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            idt = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            return self.relu(out + idt)

    class ResNet50(nn.Module):
        def __init__(self):
            super().__init__()
            self.inplanes = 64
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
            self.layer1 = self._layer(64, 3)
            self.layer2 = self._layer(128, 4, stride=2)
            self.layer3 = self._layer(256, 6, stride=2)
            self.layer4 = self._layer(512, 3, stride=2)
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(2048, num_classes)

        def _layer(self, planes, blocks, stride=1):
            down = None
            if stride != 1 or self.inplanes != planes * 4:
                down = nn.Sequential(nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False),
                                     nn.BatchNorm2d(planes * 4))
            layers = [Bottleneck(self.inplanes, planes, stride, down)]
            self.inplanes = planes * 4
            layers += [Bottleneck(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*layers)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    return ResNet50()


class Workload:
    def __init__(self, args):
        import torch
        import torch.nn as nn
        self.torch = torch
        torch.manual_seed(args.seed)
        torch.set_num_threads(args.threads)
        self.model = build_resnet50(torch, nn).eval()
        # BatchNorm with random running statistics keeps activations finite.
        with torch.no_grad():
            for m in self.model.modules():
                if isinstance(m, nn.BatchNorm2d):
                    m.running_mean.uniform_(-0.1, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
        self.image = torch.rand(1, 3, args.size, args.size)
        self.params = sum(p.numel() for p in self.model.parameters())
        self.lock = threading.Lock()
        self.count = {"loop": 0, "request": 0}
        self.times = []  # monotonic end times of recent inferences
        self.window = args.rate_window
        self.last = None
        self.start = time.monotonic()

    def infer(self, who):
        with self.lock:
            t0 = time.monotonic()
            with self.torch.no_grad():
                logits = self.model(self.image)
            t1 = time.monotonic()
            self.count[who] += 1
            self.times.append(t1)
            cut = t1 - self.window
            while self.times and self.times[0] < cut:
                self.times.pop(0)
            digest = hashlib.blake2b(logits.numpy().tobytes(), digest_size=8).hexdigest()
            self.last = {"latency_ms": round((t1 - t0) * 1000, 3), "top1": int(logits.argmax()),
                         "digest": digest}
            return dict(self.last)

    def stat(self):
        with self.lock:
            now = time.monotonic()
            recent = [t for t in self.times if t >= now - self.window]
            return {"inferences": self.count["loop"] + self.count["request"], "loop": self.count["loop"],
                    "requests": self.count["request"], "rate_window_s": self.window,
                    "recent_per_s": round(len(recent) / self.window, 3),
                    "uptime_s": round(now - self.start, 3), "params": self.params,
                    "last": self.last}


def serve(w, lsock):
    while True:
        try:
            conn, _ = lsock.accept()
        except InterruptedError:
            continue
        with conn:
            conn.settimeout(10)
            try:
                line = conn.makefile("rb").readline().decode(errors="replace").strip()
            except (OSError, socket.timeout):
                continue
            if line == "INFER":
                out = w.infer("request")
                out.update(w.stat())
            elif line == "STAT":
                out = w.stat()
            elif line == "QUIT":
                conn.sendall(b'{"bye": true}\n')
                os._exit(0)
            else:
                out = {"error": "unknown command; send INFER, STAT or QUIT and a newline"}
            try:
                conn.sendall((json.dumps(out) + "\n").encode())
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=7080, help="TCP port on 0.0.0.0 (0 = any; default 7080)")
    ap.add_argument("--seed", type=int, default=1, help="seed of weights and image (default 1)")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    ap.add_argument("--size", type=int, default=224, help="image side in pixels (default 224)")
    ap.add_argument("--loop", action="store_true", help="infer back to back in the background")
    ap.add_argument("--rate-window", type=float, default=1.0, help="seconds of the recent rate (default 1)")
    args = ap.parse_args()
    if not (1 <= args.threads <= 64 and 32 <= args.size <= 1024 and args.rate_window > 0):
        ap.error("--threads 1..64, --size 32..1024, --rate-window > 0")
    try:
        w = Workload(args)
    except ImportError as e:
        print(f"ml_infer: {e}: install python3-torch (make deps-ml)", file=sys.stderr)
        return 2
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        lsock.bind(("0.0.0.0", args.port))
    except OSError as e:
        print(f"ml_infer: cannot listen on port {args.port}: {e}", file=sys.stderr)
        return 2
    lsock.listen(64)
    first = w.infer("loop")  # warm: every weight touched once
    print(f"ml_infer: pid {os.getpid()}, resnet50 {w.params} params, seed {args.seed}, "
          f"digest {first['digest']}, first inference {first['latency_ms']} ms, "
          f"port {lsock.getsockname()[1]}", flush=True)
    if args.loop:
        threading.Thread(target=lambda: [w.infer("loop") for _ in iter(int, 1)], daemon=True).start()
    serve(w, lsock)


if __name__ == "__main__":
    sys.exit(main())
