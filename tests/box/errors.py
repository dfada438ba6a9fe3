"""One error type for everything the box cannot do; the pytest fixture turns it into pytest.fail."""


class BoxError(RuntimeError):
    pass
