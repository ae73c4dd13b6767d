from twisted.application.service import ServiceMaker

serviceMaker = ServiceMaker(
    "resmon",
    "resmon.tap",
    "Reactive resource monitor: agent, analyzer and live dashboard.",
    "resmon",
)
