#!/bin/sh
# How field-guide.pdf was made (run once; the PDF is committed): Chromium prints
# field-guide.src.html, with an outline from its headings, to a 3-page PDF:
# page 1 "Workshop Field Guide", page 2 "Tool Calibration", page 3 only an
# image (scan.png, a grey gradient standing in for a scanned page without text).
set -eu
cd "$(dirname "$0")"
python3 -c "
from PIL import Image
Image.linear_gradient('L').resize((240, 160)).save('scan.png', optimize=True)
"
chromium --headless --no-sandbox --disable-gpu --no-pdf-header-footer \
  --generate-pdf-document-outline --print-to-pdf=field-guide.pdf field-guide.src.html
rm scan.png
