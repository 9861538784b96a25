"""The message catalogue: every message type number of protocol v2 and its name.

Client-to-server types are <= 100, server-to-client types are > 100 (the draft's rule).
`protocol/PROTOCOL.md` documents each one; `tests/unit/test_protocol_doc.py` keeps the two equal.
"""

from enum import IntEnum

PROTOCOL_VERSION = 2
PUSH_RID = "0"


class MessageType(IntEnum):
    # Client to server: the draft's 18 types.
    HELLO = 1
    REGISTER = 2
    PING = 3
    QUEUE = 4
    LSQUEUE = 5
    SUBSCRIBE = 6
    UNSUBSCRIBE = 7
    CREDIT = 8
    ADDQUEUE = 9
    STATUS = 10
    RMQUEUE = 11
    PAUSE = 12
    RESUME = 13
    ENQUEUE = 14
    JOB = 15
    RMJOB = 16
    LSJOB = 17
    QSTATS = 18
    # Client to server: job delivery (planned in the draft, specified here).
    ACK = 19
    COMPLETE = 20
    FAIL = 21
    JOBBEAT = 22
    GOODBYE = 23
    RETRY = 24
    RELEASE = 25
    # Client to server: queue control and job logs.
    SETQUEUE = 26
    JOBLOG = 27
    CLEARQUEUE = 28
    OBLITERATE = 29
    # Client to server: bulk enqueue.
    ENQUEUEMANY = 30
    # Client to server: authentication and user administration.
    AUTH = 31
    USERADD = 32
    USERLIST = 33
    USERRM = 34
    USERPERMIT = 35
    # Results without polling: be told of a job's final outcome.
    WATCH = 40
    UNWATCH = 41
    # Job actions: cancel a job; act on a queue's jobs of one status.
    CANCEL = 42
    BULK = 43
    # Worker control: an admin tells workers to go quiet, stop or change concurrency.
    WORKERCTL = 44
    # Schedules: cron expressions that enqueue jobs.
    ADDSCHEDULE = 45
    LSSCHEDULE = 46
    RMSCHEDULE = 47
    PAUSESCHEDULE = 48
    RESUMESCHEDULE = 49
    # Cluster mode: which broker owns which queue.
    ROUTES = 50
    # Server to client.
    OK = 101
    ERR = 102
    HI = 103
    IDENT = 104
    PONG = 105
    QUEST = 106
    BYE = 107
    SUBEND = 108
    RESULT = 110
    ABORT = 111
    CONTROL = 112

    @property
    def is_client_type(self) -> bool:
        return self.value <= 100


CLIENT_TYPES = frozenset(t for t in MessageType if t.is_client_type)
