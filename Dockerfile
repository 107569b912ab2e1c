FROM python:3.11-slim
WORKDIR /app
# torch from PyPI (a CUDA-enabled build on x86-64: the same image serves CPU and GPU workers).
RUN pip install --no-cache-dir torch==2.13.0
COPY . .
RUN pip install --no-cache-dir -e .
# Not root: the service reads the code and writes only its data directory (a new named
# volume mounted there takes this directory's owner).
RUN useradd --create-home --uid 10001 hwnas \
    && mkdir -p /var/lib/hwnas && chown hwnas:hwnas /var/lib/hwnas
USER hwnas
ENV PYTHONUNBUFFERED=1
