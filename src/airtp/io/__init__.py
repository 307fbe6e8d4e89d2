"""Reading and writing other formats, one module or package per format (DICOM RT: :mod:`airtp.io.dicom`)."""
