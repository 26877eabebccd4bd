"""`make demo`: the whole product on one machine, narrated, on the embedded default.

1. write the roles (issuer.toml)      5. bootstrap an on-prem machine with issuer-agent
2. initialise the private CA          6. call an mTLS API with the certificate (and without)
3. start the issuer service           7. bootstrap an EC2 instance (IMDSv2 identity document)
4. create a one-time join token       8. bootstrap an IAM user and an ECS-style task role (STS)
... then renewal, a daemon, revocation, an operator signed in with IAM (remote admin commands,
the deny list), and a CA rotation onto AWS KMS with the truststore published to S3, and the audit trail:
`issuer audit verify`, events to EventBridge.

AWS is played by local stand-ins: moto's server for STS and IAM (signatures checked),
a fake instance metadata service, and a demo "AWS" key trusted for one region.

Everything runs on 127.0.0.1 under ./.demo; the processes it starts are stopped at
the end; it exits 0 only if every step did what it said.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509

from demo.authorizer import decide
from demo.aws_standins import ACCOUNT, INSTANCE, REGION, DemoAws, demo_aws
from demo.mtls_endpoint import MtlsEndpoint, make_server_certificate
from tests.support.moto_server import free_port

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".demo"
BIN = Path(sys.executable).parent

ROLES = """\
# issuer.toml written by the demo
[issuer]
trust_domain = "demo.example"
server_id = "issuer.demo.example"
registry_refresh = "1s"                  # replicas follow CA rotation within a second (default 5s)

[events]
# Every issuance, renewal, revocation and refusal as an EventBridge event (moto here; a rule sends them to SQS).
bus_arn = "{bus_arn}"

[aws.sts]
# Real clients sign for the real STS host; the issuer sends those requests to moto instead.
# (the instance identity role's requests are signed for eu-west-2 here, so they reach the second moto)
endpoint_overrides = {{ "sts.us-east-1.amazonaws.com" = "{sts_url}", "sts.eu-west-2.amazonaws.com" = "{role_sts_url}" }}

[aws.ec2]
# The demo's stand-in "AWS" signing certificate, trusted for one region.
extra_certs = {{ "{region}" = ["{aws_cert}"] }}

[[roles]]
name = "onprem"
methods = ["token"]
ttl = "24h"
uri_san = "spiffe://{{trust_domain}}/onprem/{{name}}"

[[roles]]
name = "short-lived"
methods = ["token"]
ttl = "12s"                              # to watch the daemon renew in the demo; real roles use hours

[[roles]]
name = "web-fleet"
methods = ["aws-ec2"]
account_ids = ["{account}"]
regions = ["{region}"]
max_instance_age = "1h"                 # documents never expire: only young instances may attest
ttl = "12h"

[[roles]]
name = "web-fleet-role"
methods = ["aws-ec2-role"]              # the instance identity role: a fresh STS signature, no document
account_ids = ["{account}"]
regions = ["{region}"]
ttl = "12h"

[[roles]]
name = "build-servers"
methods = ["aws-iam"]
principal_arns = ["{user_arn}"]

[[roles]]
name = "ecs-tasks"
methods = ["aws-iam"]
principal_arns = ["arn:aws:iam::{account}:role/ecs-task-*"]
ttl = "1h"
uri_san = "spiffe://{{trust_domain}}/aws/{{account_id}}/iam/{{role_name}}/{{session_name}}"

[[admins]]                               # who may use the admin API (issuer --server URL ...), signed in with IAM
name = "platform-team"
principals = ["{operator_arn}"]
permissions = ["read", "deny", "revoke", "audit"]
"""


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(f"\n\033[1m==> {text}\033[0m", flush=True)


def ok(text: str) -> None:
    print(f"    ok: {text}", flush=True)


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


def call_api(endpoint: MtlsEndpoint, server_cert: Path, certs: Path, expected: str) -> None:
    # Like a client of API Gateway: only the leaf is presented; the truststore must hold its issuer.
    print(f"    GET {endpoint.url} presenting only {certs.name}/cert.pem (the leaf):")
    answer = mtls_get(endpoint.url, server_ca=server_cert, cert=certs / "cert.pem", key=certs / "key.pem")
    print(f"      {json.dumps(answer)}")
    if answer.get("hello") != expected:
        raise DemoFailed(f"the API saw {answer}, expected {expected}")
    ok(f"the API saw {expected}")


def watch_daemon(endpoint: MtlsEndpoint, server_cert: Path, certs: Path, *, seconds: float) -> None:
    """Call the API with whatever the daemon has installed, every second, for ``seconds``."""
    deadline = time.monotonic() + 15
    while not (certs / ".live").exists():
        if time.monotonic() > deadline:
            raise DemoFailed("the daemon did not bootstrap within 15 s")
        time.sleep(0.2)
    serials: list[int] = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        live = (certs / ".live").resolve()  # one generation: a key and the certificate that matches it
        leaf = x509.load_pem_x509_certificate((live / "cert.pem").read_bytes())
        answer = mtls_get(endpoint.url, server_ca=server_cert, cert=live / "cert.pem", key=live / "key.pem")
        if leaf.serial_number not in serials:
            serials.append(leaf.serial_number)
            left = int((leaf.not_valid_after_utc - datetime.now(UTC)).total_seconds())
            print(f"      serial {leaf.serial_number:x}  ({left:>2d} s left)  API: {answer['hello']}", flush=True)
        time.sleep(1)
    if len(serials) < 3:
        raise DemoFailed(f"the daemon renewed {len(serials) - 1} time(s) in {seconds:.0f} s")
    ok(f"{len(serials)} certificates in {seconds:.0f} s, each renewed before it expired; every API call answered")


def rotate_ca(
    aws: DemoAws,
    env: dict[str, str],
    *,
    issuer: str,
    agent: str,
    endpoint: MtlsEndpoint,
    server_cert: Path,
    server_key: Path,
    machines: dict[str, Path],
) -> MtlsEndpoint:
    """Step 13: rotate the issuing CA with overlap, publishing the truststore to S3 (moto) each time."""
    say("Step 13: rotate the issuing CA onto a key in AWS KMS (moto), with overlap; truststore to S3 (moto) first")
    bucket, key = "demo-truststores", "api/truststore.pem"
    s3 = aws.s3_client()
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    s3_env = dict(env, **aws.s3_env())
    target = f"s3://{bucket}/{key}"
    publish = ["--publish", target]
    run([issuer, "truststore", "publish", target], env=s3_env)
    rotated = json.loads(
        run(
            [
                issuer,
                "ca",
                "rotate",
                "--create-kms-key",
                "alias/demo-issuing-2",
                "--validity",
                "90d",
                "--json",
                *publish,
            ],
            env=s3_env,
            capture=True,
        )
    )
    new_fp = rotated["fingerprint_sha256"]
    if not rotated["key_ref"].startswith("kms:"):
        raise DemoFailed(f"the new issuing CA's key is {rotated['key_ref']}, not in KMS")
    ok(f"prepared issuing CA {new_fp[:16]}… with its key in KMS ({rotated['key_ref'][:40]}…): no key file")
    ok("it is in the published truststore, signing nothing yet")

    def swap_endpoint(current: MtlsEndpoint) -> MtlsEndpoint:
        published = WORK / "published-truststore.pem"
        published.write_bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
        current.stop()
        fresh = MtlsEndpoint(truststore=published, cert=server_cert, key=server_key, port=current.port)
        fresh.start()
        return fresh

    endpoint = swap_endpoint(endpoint)
    run([issuer, "ca", "activate", new_fp[:16], "--publish", target], env=s3_env)
    time.sleep(1.5)  # every replica re-reads the registry (registry_refresh = 1s here)
    old_leaf = machines["build-box-1"]
    new_leaf = machines["build-server"]
    run([agent, "renew", "--out", str(new_leaf), "--force"], env=env)
    issuers = {
        name: x509.load_pem_x509_certificate((path / "cert.pem").read_bytes()).issuer.rfc4514_string()
        for name, path in machines.items()
    }
    print(f"    issuers now: {json.dumps(issuers)}")
    if len(set(issuers.values())) != 2:
        raise DemoFailed("the renewed machine should be on the new issuing CA, the other on the old")
    call_api(endpoint, server_cert, old_leaf, "spiffe://demo.example/onprem/build-box-1")
    call_api(endpoint, server_cert, new_leaf, f"spiffe://demo.example/aws/{ACCOUNT}/iam/user/build-server")
    ok("a leaf of the old (file key) and of the new (KMS key) issuing CA both pass, leaf alone, against the truststore")

    old_fp = next(
        c["fingerprint_sha256"]
        for c in json.loads(run([issuer, "ca", "status", "--json"], env=env, capture=True))["issuers"]
        if c["fingerprint_sha256"] != new_fp and c["state"] != "retired"
    )
    print("    Retiring the old issuing CA while its leaves live is refused:")
    expect_refusal([issuer, "ca", "retire", old_fp[:16]], env=env, what="retiring a CA with live leaves")
    print("    Once its last leaf has expired, `ca retire` takes it out of the truststore. The demo cannot")
    print("    wait a day, so it forces it, to show the effect: a leaf of the retired CA no longer passes.")
    run([issuer, "ca", "retire", old_fp[:16], "--force", "--publish", target], env=s3_env)
    endpoint = swap_endpoint(endpoint)
    try:
        mtls_get(endpoint.url, server_ca=server_cert, cert=old_leaf / "cert.pem", key=old_leaf / "key.pem")
    except (ssl.SSLError, urllib.error.URLError, ConnectionError, OSError) as exc:
        ok(f"the old CA's leaf is refused now ({type(exc).__name__}), as API Gateway refuses it after retirement")
    else:
        raise DemoFailed("a leaf of the retired CA still passed")
    call_api(endpoint, server_cert, new_leaf, f"spiffe://demo.example/aws/{ACCOUNT}/iam/user/build-server")
    return endpoint


def operator_step(
    aws: DemoAws,
    env: dict[str, str],
    *,
    issuer: str,
    agent: str,
    server: str,
    iam_args: list[str],
    iam_env: dict[str, str],
) -> None:
    """Step 12: an operator signs in with IAM and works through the admin API: no database access needed."""
    say("Step 12: an operator signs in with IAM (SigV4-signed STS proof per request) and denies the ECS task role")
    ops = dict(iam_env, **aws.operator.env(), AWS_DEFAULT_REGION="us-east-1")
    remote = [issuer, "--server", server]
    run([*remote, "whoami"], env=ops)
    role = f"arn:aws:iam::{ACCOUNT}:role/ecs-task-payments"
    run([*remote, "deny", "--principal", role, "--reason", "demo: task role retired", "--revoke"], env=ops)
    print("    The task's agent attests again:")
    expect_refusal(
        [*iam_args, "--role", "ecs-tasks", "--out", str(WORK / "denied-task")],
        env=dict(iam_env, **aws.task.env()),
        what="a denied principal's attestation (403 identity_denied)",
    )
    run([*remote, "audit", "--method", "admin", "--limit", "3"], env=ops)
    ok("every operator action is on the record with the operator's IAM ARN")


BUS = "demo-security"


def make_event_bus(aws: DemoAws) -> tuple[str, str]:
    """An EventBridge bus (moto) with a rule that sends the issuer's events to an SQS queue: (bus ARN, queue URL)."""
    events, sqs = aws.client("events"), aws.client("sqs")
    bus_arn = events.create_event_bus(Name=BUS)["EventBusArn"]
    queue_url = sqs.create_queue(QueueName=f"{BUS}-queue")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    events.put_rule(Name="issuer", EventBusName=BUS, EventPattern=json.dumps({"source": ["aws-machine-issuer"]}))
    events.put_targets(Rule="issuer", EventBusName=BUS, Targets=[{"Id": "siem", "Arn": queue_arn}])
    return bus_arn, queue_url


def audit_trail(aws: DemoAws, env: dict[str, str], *, issuer: str, queue_url: str) -> None:
    """Step 13: the hash-chained audit trail verifies, and the events arrived on the bus (moto) -> SQS."""
    say("Step 13: the audit trail: `issuer audit verify` recomputes the chain; events reached EventBridge")
    time.sleep(1.5)  # the replica seals each second
    run([issuer, "audit", "verify"], env=env)
    ok("every row is in the hash chain and unchanged; the checkpoints, signed with the issuing CA key, verify")
    sqs = aws.client("sqs")
    seen: dict[str, dict[str, object]] = {}
    deadline = time.monotonic() + 15
    while "Certificate Revoked" not in seen and time.monotonic() < deadline:
        for message in sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get(
            "Messages", []
        ):
            event = json.loads(message["Body"])
            seen.setdefault(event["detail-type"], event)
    counts = ", ".join(sorted(seen))
    print(f"    the SQS queue behind the bus's rule received: {counts}")
    revoked = seen.get("Certificate Revoked")
    if revoked is None:
        raise DemoFailed("no 'Certificate Revoked' event arrived within 15 s")
    print("      " + json.dumps(revoked, indent=2).replace("\n", "\n      "))
    ok("the revocation of step 11 arrived as an event, with an event_id to deduplicate on")


def expect_refusal(args: list[str], *, env: dict[str, str], what: str) -> None:
    try:
        run(args, env=env)
    except DemoFailed:
        ok(f"{what} refused")
        return
    raise DemoFailed(f"{what} was accepted")


def expect_openssl_refusal(args: list[str], *, env: dict[str, str], what: str) -> None:
    """Run openssl expecting it to refuse, saying ``what``."""
    print(f"    $ {' '.join(shlex.quote(a) for a in [Path(args[0]).name, *args[1:]])}", flush=True)
    result = subprocess.run(args, env=env, text=True, capture_output=True, timeout=60, check=False)
    output = (result.stdout + result.stderr).strip()
    print("      " + output.replace("\n", "\n      "), flush=True)
    if result.returncode == 0 or what not in output:
        raise DemoFailed(f"openssl did not refuse with {what!r}")
    ok(f"refused: {what}")


def main() -> int:
    with ExitStack() as stack:
        if WORK.exists():
            shutil.rmtree(WORK)
        WORK.mkdir(mode=0o700)
        say("Starting the AWS stand-ins: moto (STS + IAM, SigV4 checked), a fake IMDS, a demo AWS signing key")
        aws = stack.enter_context(demo_aws(WORK))
        ok(f"STS at {aws.sts_url}; IMDS at {aws.imds_url}; IAM user {aws.user_arn}; role {aws.role_arn}")
        return walkthrough(aws)


def walkthrough(aws: DemoAws) -> int:
    state = WORK / "state"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ISSUER_", "AWS_"))}
    # The CA passphrase lives apart from the state directory (a secret mounted elsewhere, in production);
    # `issuer ca init` generates it there.
    passphrase = WORK / "secrets" / "ca-passphrase"
    env.update(
        {
            "ISSUER_STATE_DIR": str(state),
            "ISSUER_CONFIG": str(WORK / "issuer.toml"),
            "ISSUER_CA_PASSPHRASE_FILE": str(passphrase),
        }
    )
    issuer, agent = str(BIN / "issuer"), str(BIN / "issuer-agent")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    service: subprocess.Popen[bytes] | None = None
    endpoint: MtlsEndpoint | None = None
    try:
        bus_arn, queue_url = make_event_bus(aws)
        say("Step 1: write the roles: on-prem (join tokens), an EC2 fleet, build servers and ECS tasks (IAM)")
        roles = ROLES.format(
            sts_url=aws.sts_url,
            role_sts_url=aws.instance_role_sts_url,
            region=REGION,
            aws_cert=aws.aws_cert_path,
            account=ACCOUNT,
            user_arn=aws.user_arn,
            operator_arn=aws.operator_arn,
            bus_arn=bus_arn,
        )
        (WORK / "issuer.toml").write_text(roles)
        print("      " + roles.rstrip().replace("\n", "\n      "))

        say("Step 2: initialise the private CA (root ECDSA P-384, issuing ECDSA P-256, keys encrypted at rest)")
        run([issuer, "ca", "init"], env=env)
        modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (state / "ca").iterdir()}
        if any(m != "0o600" for m in modes.values()):
            raise DemoFailed(f"CA files must be 0600: {modes}")
        ok(f"CA files are mode 0600: {', '.join(sorted(modes))}")
        if not passphrase.exists() or any(p.name == "ca-passphrase" for p in state.rglob("*")):
            raise DemoFailed(f"the CA passphrase must be in {passphrase}, not in the state directory")
        mode = oct(passphrase.stat().st_mode & 0o777)
        ok(f"the passphrase that unlocks them is kept apart, in {passphrase} (mode {mode})")

        say(f"Step 3: start the issuer on {server} (SQLite in {state})")
        log = (WORK / "issuer.log").open("wb")
        print(f"    $ issuer serve --port {port} --log-format text   (log: {WORK / 'issuer.log'})")
        service = subprocess.Popen(
            [issuer, "serve", "--port", str(port), "--log-format", "text"],
            # The replica reaches "AWS KMS" (moto) once the CA is rotated onto a KMS key in step 13.
            env=dict(env, **aws.s3_env()),
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
        expect_refusal(
            [agent, "bootstrap", "--method", "token", "--server", server, "--out", str(WORK / "again")],
            env=agent_env,
            what="second use",
        )

        say("Step 6: the API (stand-in for API Gateway with mTLS) trusts the truststore the issuer exports")
        print("    API Gateway looks up the issuer of the client's *leaf* in its truststore and ignores")
        print("    intermediates the client sends, so the truststore holds the issuing CA(s) and the root.")
        truststore = WORK / "truststore.pem"
        run([issuer, "truststore", "export", "--out", str(truststore)], env=env)
        with urllib.request.urlopen(f"{server}/v1/truststore", timeout=5) as resp:
            if resp.read() != truststore.read_bytes():
                raise DemoFailed("GET /v1/truststore differs from `issuer truststore export`")
        ok("GET /v1/truststore serves the same file")
        verify_leaf = ["openssl", "verify", "-x509_strict", "-purpose", "sslclient", "-CAfile", str(truststore)]
        run([*verify_leaf, str(certs / "cert.pem")], env=env)
        ok("openssl verifies the leaf alone against the truststore (no -untrusted), as API Gateway does")
        server_cert, server_key = make_server_certificate(WORK)
        endpoint = MtlsEndpoint(truststore=truststore, cert=server_cert, key=server_key, port=free_port())
        endpoint.start()
        call_api(endpoint, server_cert, certs, "spiffe://demo.example/onprem/build-box-1")
        print(f"    GET {endpoint.url} without a client certificate:")
        try:
            answer = mtls_get(endpoint.url, server_ca=server_cert, cert=None, key=None)
        except (ssl.SSLError, urllib.error.URLError, ConnectionError, OSError) as exc:
            ok(f"refused during the TLS handshake ({type(exc).__name__})")
        else:
            raise DemoFailed(f"the API answered without a client certificate: {answer}")

        say("Step 7: an EC2 instance bootstraps with its AWS-signed identity document (IMDSv2)")
        ec2 = WORK / "ec2-instance"
        ec2_args = [
            agent,
            "bootstrap",
            "--method",
            "aws-ec2",
            "--role",
            "web-fleet",
            "--server",
            server,
            "--imds-endpoint",
            aws.imds_url,
        ]
        run([*ec2_args, "--out", str(ec2)], env=env)
        ok("first attestation binds the instance to the nonce kept in instance-nonce (0600)")
        run([*ec2_args, "--out", str(ec2)], env=env)
        ok("re-attestation with the kept nonce works")
        print("    A copy of the same identity document from another machine (no nonce) is a replay:")
        expect_refusal([*ec2_args, "--out", str(WORK / "thief")], env=env, what="replayed identity document")
        call_api(endpoint, server_cert, ec2, f"spiffe://demo.example/aws/{ACCOUNT}/{REGION}/ec2/{INSTANCE}")
        print("    The same instance with no document at all: its instance identity role signs a fresh STS request")
        role_args = [agent, "bootstrap", "--method", "aws-ec2-role", "--role", "web-fleet-role", "--server", server]
        role_args += [
            "--server-id",
            "issuer.demo.example",
            "--sts-region",
            "eu-west-2",
            "--imds-endpoint",
            aws.imds_url,
        ]
        run([*role_args, "--out", str(WORK / "ec2-role")], env=env)
        ok("aws-ec2-role: nothing to copy or replay, no trust on first use; the same instance, the same identity")
        call_api(
            endpoint, server_cert, WORK / "ec2-role", f"spiffe://demo.example/aws/{ACCOUNT}/{REGION}/ec2/{INSTANCE}"
        )

        say("Step 8: IAM: a build server with an IAM user's keys, and an ECS task with its role's session")
        iam_args = [
            agent,
            "bootstrap",
            "--method",
            "aws-iam",
            "--server",
            server,
            "--server-id",
            "issuer.demo.example",
            "--sts-region",
            "us-east-1",
        ]
        iam_env = dict(
            env,
            AWS_EC2_METADATA_DISABLED="true",
            AWS_CONFIG_FILE=str(WORK / "no-aws-config"),
            AWS_SHARED_CREDENTIALS_FILE=str(WORK / "no-aws-credentials"),
        )
        build = WORK / "build-server"
        run([*iam_args, "--role", "build-servers", "--out", str(build)], env=dict(iam_env, **aws.user.env()))
        call_api(endpoint, server_cert, build, f"spiffe://demo.example/aws/{ACCOUNT}/iam/user/build-server")
        task = WORK / "ecs-task"
        run([*iam_args, "--role", "ecs-tasks", "--out", str(task)], env=dict(iam_env, **aws.task.env()))
        call_api(endpoint, server_cert, task, f"spiffe://demo.example/aws/{ACCOUNT}/iam/ecs-task-payments/task-7f3a9c")
        print("    The build server's keys asking for the ECS role (not in its principal_arns):")
        expect_refusal(
            [*iam_args, "--role", "ecs-tasks", "--out", str(WORK / "wrong-role")],
            env=dict(iam_env, **aws.user.env()),
            what="role outside the principal's bindings",
        )

        say("Step 9: renewal: the machine's current certificate vouches for a new key")
        before = x509.load_pem_x509_certificate((certs / "cert.pem").read_bytes())
        run([agent, "renew", "--out", str(certs)], env=env)
        ok("not due yet: nothing changed, exit 0")
        run([agent, "renew", "--out", str(certs), "--force"], env=env)
        after = x509.load_pem_x509_certificate((certs / "cert.pem").read_bytes())
        if after.serial_number == before.serial_number or after.public_key() == before.public_key():
            raise DemoFailed("renewal did not give a new certificate for a new key")
        ok("new serial, new key (a proof-of-possession token signed by the old key vouched for it)")
        run([issuer, "certs", "history", "build-box-1"], env=env)
        call_api(endpoint, server_cert, certs, "spiffe://demo.example/onprem/build-box-1")

        say("Step 10: a daemon keeps a 12-second certificate valid while the API keeps answering")
        daemon_dir = WORK / "daemon-machine"
        daemon_token = run(
            [issuer, "token", "create", "--role", "short-lived", "--name", "edge-daemon", "--ttl", "5m"],
            env=env,
            capture=True,
        ).strip()
        print(f"    $ issuer-agent run --method token --server {server} --out {daemon_dir}   (in the background)")
        daemon = subprocess.Popen(
            [agent, "run", "--method", "token", "--server", server, "--out", str(daemon_dir)],
            env=dict(env, ISSUER_JOIN_TOKEN=daemon_token),
            stdout=subprocess.DEVNULL,
            stderr=(WORK / "daemon.log").open("wb"),
        )
        try:
            watch_daemon(endpoint, server_cert, daemon_dir, seconds=3 * 12)
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
        if daemon.returncode != 0:
            raise DemoFailed(f"the daemon exited {daemon.returncode}; see {WORK / 'daemon.log'}")
        ok("SIGTERM: the daemon stopped cleanly (exit 0)")

        say("Step 11: revocation: API Gateway checks no CRL, so the Lambda authorizer enforces the signed CRLs")
        run([issuer, "revoke", "--instance", INSTANCE, "--reason", "keyCompromise"], env=env)
        for label, path, expected in (("the EC2 instance", ec2, False), ("build-box-1", certs, True)):
            allowed, reason = decide(
                path / "cert.pem", crls_url=f"{server}/v1/crls", truststore_url=f"{server}/v1/truststore"
            )
            print(
                f"    authorizer, GET /orders with {label}'s certificate: {'Allow' if allowed else 'Deny'} ({reason})"
            )
            if allowed != expected:
                raise DemoFailed(f"the authorizer answered {reason} for {label}")
        ok("the revoked certificate is denied, the other allowed (each CRL verified against the truststore)")
        crls = WORK / "crls.pem"
        with urllib.request.urlopen(f"{server}/v1/crls", timeout=5) as resp:
            crls.write_bytes(resp.read())
        check_all = ["openssl", "verify", "-crl_check_all", "-CAfile", str(truststore), "-CRLfile", str(crls)]
        run([*check_all, str(certs / "cert.pem")], env=env)
        expect_openssl_refusal([*check_all, str(ec2 / "cert.pem")], env=env, what="certificate revoked")
        ok("GET /v1/crls (the issuing CA's and the root's CRL): openssl verify -crl_check_all agrees")

        operator_step(aws, env, issuer=issuer, agent=agent, server=server, iam_args=iam_args, iam_env=iam_env)

        endpoint = rotate_ca(
            aws,
            env,
            issuer=issuer,
            agent=agent,
            endpoint=endpoint,
            server_cert=server_cert,
            server_key=server_key,
            machines={"build-box-1": certs, "build-server": build},
        )

        audit_trail(aws, env, issuer=issuer, queue_url=queue_url)

        say("The record: every issuance and refusal is in the database")
        run([issuer, "certs", "list", "--limit", "12"], env=env)
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
