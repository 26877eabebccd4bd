"""`make demo`: the whole product on one machine, narrated, on the embedded default.

1. write a role (issuer.toml)         4. create a one-time join token
2. initialise the private CA          5. bootstrap a machine with issuer-agent
3. start the issuer service           6. call an mTLS API with the certificate (and without)

Everything runs on 127.0.0.1 under ./.demo; the processes it starts are stopped at
the end; it exits 0 only if every step did what it said.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from demo.mtls_endpoint import MtlsEndpoint, make_server_certificate

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent

ROLES = """\
# issuer.toml written by the demo
[issuer]
trust_domain = "demo.example"
server_id = "issuer.demo.example"

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
uri_san = "spiffe://{trust_domain}/onprem/{name}"
"""


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def ok(text: str) -> None:
    print(f"    ok: {text}", flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def run(args: list[str], *, env: dict[str, str], capture: bool = False) -> str:
    words = [Path(args[0]).name, *(a if not a.startswith("ijt_") else "ijt_…" for a in args[1:])]
    shown = " ".join(shlex.quote(w) for w in words)
    print(f"    $ {shown}", flush=True)
    result = subprocess.run(args, env=env, text=True, capture_output=True, timeout=120, check=False)
    out = result.stdout
    if not capture and out:
        print("      " + out.rstrip().replace("\n", "\n      "), flush=True)
    if result.stderr.strip() and (result.returncode != 0 or not capture):
        print("      " + result.stderr.rstrip().replace("\n", "\n      "), flush=True)
    if result.returncode != 0:
        raise DemoFailed(f"`{args[0]} {args[1]}` exited {result.returncode}")
    return out


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DemoFailed(f"the issuer exited with {proc.returncode}; see {WORK / 'issuer.log'}")
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    raise DemoFailed(f"the issuer did not become ready at {url}")


def mtls_get(url: str, *, server_ca: Path, cert: Path | None, key: Path | None) -> dict[str, object]:
    context = ssl.create_default_context(cafile=str(server_ca))
    if cert and key:
        context.load_cert_chain(str(cert), str(key))
    with urllib.request.urlopen(url, context=context, timeout=10) as resp:
        return json.loads(resp.read())


def main() -> int:
    if WORK.exists():
        shutil.rmtree(WORK)
    WORK.mkdir(mode=0o700)
    state = WORK / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
    env.update({"ISSUER_STATE_DIR": str(state), "ISSUER_CONFIG": str(WORK / "issuer.toml")})
    issuer, agent = str(BIN / "issuer"), str(BIN / "issuer-agent")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    service: subprocess.Popen[bytes] | None = None
    endpoint: MtlsEndpoint | None = None
    try:
        say("Step 1: write a role: on-prem machines with join tokens get 24 h certificates")
        (WORK / "issuer.toml").write_text(ROLES)
        print("      " + ROLES.rstrip().replace("\n", "\n      "))

        say("Step 2: initialise the private CA (root ECDSA P-384, issuing ECDSA P-256, keys encrypted at rest)")
        run([issuer, "ca", "init"], env=env)
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (state / "ca").iterdir()}
        if any(m != "0o600" for m in modes.values()):
            raise DemoFailed(f"CA files must be 0600: {modes}")
        ok(f"CA files are mode 0600: {', '.join(sorted(modes))}")

        say(f"Step 3: start the issuer on {server} (SQLite in {state})")
        log = (WORK / "issuer.log").open("wb")
        print(f"    $ issuer serve --port {port} --log-format text   (log: {WORK / 'issuer.log'})")
        service = subprocess.Popen(
            [issuer, "serve", "--port", str(port), "--log-format", "text"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        wait_ready(f"{server}/readyz", service)
        ok("GET /readyz answers 200 (database reachable, signer loaded)")

        say("Step 4: an operator creates a one-time join token for machine 'build-box-1'")
        token = run(
            [issuer, "token", "create", "--role", "onprem", "--name", "build-box-1", "--ttl", "15m"],
            env=env,
            capture=True,
        ).strip()
        if not token.startswith("ijt_"):
            raise DemoFailed("no token printed")
        ok("token printed once (stored only as a SHA-256 hash)")

        say("Step 5: the machine bootstraps: new key locally, CSR + token to the issuer, files written atomically")
        certs = WORK / "machine"
        agent_env = dict(env, ISSUER_JOIN_TOKEN=token)
        run([agent, "bootstrap", "--method", "token", "--server", server, "--out", str(certs)], env=agent_env)
        key_mode = oct((certs / "key.pem").stat().st_mode & 0o777)
        if key_mode != "0o600":
            raise DemoFailed(f"key.pem must be 0600, is {key_mode}")
        ok(f"{certs}/key.pem is 0600; cert.pem, chain.pem, bundle.pem, fullchain.pem written")
        print("    The same token again is refused (single use):")
        try:
            run(
                [agent, "bootstrap", "--method", "token", "--server", server, "--out", str(WORK / "again")],
                env=agent_env,
            )
            raise DemoFailed("a used token was accepted")
        except DemoFailed as exc:
            if "accepted" in str(exc):
                raise
        ok("second use refused")

        say("Step 6: the API (stand-in for API Gateway with mTLS) trusts GET /v1/bundle")
        bundle = WORK / "truststore.pem"
        with urllib.request.urlopen(f"{server}/v1/bundle", timeout=5) as resp:
            bundle.write_bytes(resp.read())
        run(
            [
                "openssl",
                "verify",
                "-x509_strict",
                "-purpose",
                "sslclient",
                "-CAfile",
                str(bundle),
                "-untrusted",
                str(certs / "chain.pem"),
                str(certs / "cert.pem"),
            ],
            env=env,
        )
        server_cert, server_key = make_server_certificate(WORK)
        endpoint = MtlsEndpoint(bundle=bundle, cert=server_cert, key=server_key, port=free_port())
        endpoint.start()
        print(f"    GET {endpoint.url} with the machine's certificate:")
        answer = mtls_get(endpoint.url, server_ca=server_cert, cert=certs / "fullchain.pem", key=certs / "key.pem")
        print(f"      {json.dumps(answer)}")
        if answer.get("hello") != "spiffe://demo.example/onprem/build-box-1":
            raise DemoFailed(f"unexpected identity: {answer}")
        ok("the API saw spiffe://demo.example/onprem/build-box-1")
        print(f"    GET {endpoint.url} without a client certificate:")
        try:
            answer = mtls_get(endpoint.url, server_ca=server_cert, cert=None, key=None)
            raise DemoFailed(f"the API answered without a client certificate: {answer}")
        except (ssl.SSLError, urllib.error.URLError, ConnectionError, OSError) as exc:
            if isinstance(exc, DemoFailed):
                raise
            ok(f"refused during the TLS handshake ({type(exc).__name__})")

        say("The record: every issuance and refusal is in the database")
        run([issuer, "certs", "list"], env=env)
        print(f"\n\033[1mDemo passed.\033[0m Files are in {WORK}; the issuer and the API have been stopped.")
        return 0
    except DemoFailed as exc:
        print(f"\n\033[1;31mDemo FAILED: {exc}\033[0m", file=sys.stderr)
        return 1
    finally:
        if endpoint is not None:
            endpoint.stop()
        if service is not None:
            service.terminate()
            try:
                service.wait(timeout=10)
            except subprocess.TimeoutExpired:
                service.kill()


if __name__ == "__main__":
    sys.exit(main())
