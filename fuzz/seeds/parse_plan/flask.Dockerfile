FROM ubuntu:latest
RUN apt-get update
RUN apt-get install -y python3 python3-pip
RUN pip3 install --break-system-packages flask
COPY . /opt/my_flask_app
ENV FLASK_APP=/opt/my_flask_app/app.py
ENTRYPOINT ["flask", "run", "--host=0.0.0.0"]
