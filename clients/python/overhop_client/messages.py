"""The message catalogue of Overhop protocol v2: every message type number the client knows.

Client-to-server types are <= 100, server-to-client types are > 100. Adding a message is
one line here plus one method on `AsyncClient` (see `AsyncClient.request`).
"""

from enum import IntEnum

PROTOCOL_VERSION = 2
PUSH_RID = "0"
"""The request id of a message the server sends on its own (a push), not as a reply."""


class MessageType(IntEnum):
    # Client to server.
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
    ACK = 19
    COMPLETE = 20
    FAIL = 21
    JOBBEAT = 22
    GOODBYE = 23
    RETRY = 24
    RELEASE = 25
    SETQUEUE = 26
    JOBLOG = 27
    CLEARQUEUE = 28
    OBLITERATE = 29
    ENQUEUEMANY = 30
    AUTH = 31
    USERADD = 32
    USERLIST = 33
    USERRM = 34
    USERPERMIT = 35
    WATCH = 40
    UNWATCH = 41
    CANCEL = 42
    BULK = 43
    WORKERCTL = 44
    ADDSCHEDULE = 45
    LSSCHEDULE = 46
    RMSCHEDULE = 47
    PAUSESCHEDULE = 48
    RESUMESCHEDULE = 49
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
