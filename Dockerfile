FROM python:3.11-slim
WORKDIR /app
# torch from PyPI (a CUDA-enabled build on x86-64: the same image serves CPU and GPU workers).
RUN pip install --no-cache-dir torch==2.13.0
COPY . .
RUN pip install --no-cache-dir -e .
ENV PYTHONUNBUFFERED=1
