"""twistd plugin: ``twistd ursula``. A thin IServiceMaker that calls into ursula.supervisor."""

from twisted.application.service import IServiceMaker
from twisted.plugin import IPlugin
from zope.interface import implementer


@implementer(IServiceMaker, IPlugin)
class UrsulaServiceMaker:
    tapname = "ursula"
    description = "ursula: a replicated Durable Streams server"

    @property
    def options(self):
        from ursula.supervisor import Options
        return Options

    def makeService(self, options):
        from ursula.supervisor import make_service
        return make_service(options)


serviceMaker = UrsulaServiceMaker()
