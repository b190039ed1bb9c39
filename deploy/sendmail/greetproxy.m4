dnl greetproxy in front of sendmail: sendmail's MTA daemon on 127.0.0.1:10025, where only the proxy
dnl reaches it. In sendmail.mc, delete (or dnl) the port-25 DAEMON_OPTIONS line and put in its place
dnl
dnl     include(`/etc/mail/greetproxy.m4')dnl
dnl
dnl (define greetproxy_port before that line for another port). The submission port's lines stay as
dnl they are. Listen=1024: every client that passed the greet pause comes through this one door, and
dnl sendmail's default backlog of 10 drops bursts. The access map entries that go with this snippet
dnl are in access.greetproxy beside it.
ifdef(`greetproxy_port', `', `define(`greetproxy_port', `10025')')dnl
DAEMON_OPTIONS(`Family=inet, Name=MTA-greetproxy, Port='greetproxy_port`, Addr=127.0.0.1, Listen=1024')dnl
