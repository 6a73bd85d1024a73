"""Why an upload cannot be used. The API maps each class to one HTTP status."""


class ImagingError(ValueError):
    """Base class: the message is safe to show to the user (it never contains patient data)."""


class EmptyImageError(ImagingError):
    """The upload holds no bytes."""


class UnsupportedFormatError(ImagingError):
    """The bytes are not an image in a supported format."""


class CorruptImageError(ImagingError):
    """The format is recognised but the file is truncated or damaged."""


class UnusableImageError(ImagingError):
    """The image decodes but cannot be analysed (too small, not a projection radiograph, ...)."""
