"""Helpers of bench/nbd-peers.sh."""

from rcttest import cli, fio


def result(argv):
    """result FIO_JSON JOB: the figure of one fio run: MB/s for seq* jobs,
    IOPS otherwise; exits 1 if fio reports an error."""
    j = fio.job(argv[1])
    if argv[2].startswith("seq"):
        print(f"{(j['read']['bw_bytes'] + j['write']['bw_bytes']) / 1e6:.0f}")
    else:
        print(f"{j['read']['iops'] + j['write']['iops']:.0f}")


COMMANDS = {"result": result}

if __name__ == "__main__":
    cli.run(COMMANDS)
