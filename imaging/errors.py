"""Why an upload cannot be used. The API maps each class to one HTTP status.

| class | `code` | HTTP status the API answers |
| --- | --- | --- |
| `EmptyImageError` | empty_image | 400 |
| `UnsupportedFormatError` | unsupported_format | 415 |
| `CorruptImageError` | corrupt_image | 422 |
| `UnusableImageError` | unusable_image | 422 |

Messages are safe to show to the user: they never contain patient data.
"""


class ImagingError(ValueError):
    """Base class: the message is safe to show to the user (it never contains patient data)."""

    code = "imaging_error"  # stable machine-readable reason, for API error bodies and the UI


class EmptyImageError(ImagingError):
    """The upload holds no bytes."""

    code = "empty_image"


class UnsupportedFormatError(ImagingError):
    """The bytes are not an image in a supported format (or use an unsupported DICOM encoding)."""

    code = "unsupported_format"


class CorruptImageError(ImagingError):
    """The format is recognised but the file is truncated or damaged."""

    code = "corrupt_image"


class UnusableImageError(ImagingError):
    """The image decodes but cannot be analysed (too small, too large, not a projection radiograph, ...)."""

    code = "unusable_image"
